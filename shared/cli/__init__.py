"""The `outbox` command line (entry point: ``shared.cli.main:main``); see docs/cli.md."""
