"""``python -m harness up|localhost|demo``: the offline stack, the local Functions host, the demo."""

from __future__ import annotations

import importlib
import sys

USAGE = """usage: python -m harness <command> [options]

commands:
  up         start every fake (Entra, managed identity, Key Vault, Graph, SMTP) and Azurite,
             write <state>/local.settings.json and <state>/outbox.env; Ctrl-C stops
  localhost  run the local stand-in for the Functions host on the real function_app
             (--settings FILE: the local.settings.json that `up` wrote)
  demo       run the end-to-end demo

`python -m harness <command> --help` for the options of a command."""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "up":
        from harness.up import up_main

        return up_main(rest)
    if command == "localhost":
        from harness.localhost import main as localhost_main

        return int(localhost_main(rest) or 0)
    if command == "demo":
        try:
            demo = importlib.import_module("harness.demo")
        except ModuleNotFoundError as exc:
            if exc.name != "harness.demo":
                raise
            print("harness: the demo is not available in this checkout", file=sys.stderr)
            return 2
        return int(demo.main(rest) or 0)
    print(f"harness: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
