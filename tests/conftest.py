"""Shared pytest set-up: the harness plugin (fixtures `harness`, `azurite`, `harness_factory`, ...)."""

pytest_plugins = ["harness.fixtures"]
