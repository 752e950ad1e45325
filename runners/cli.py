"""`personalize`: the command line of the engine.

Each subcommand lives in its own module under runners/ and exposes
`register(subparsers, parents) -> None`, which adds its parser and sets
`func(args, settings) -> int`.
Heavy imports (Beam, PyFlink) happen inside the commands, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from transforms.settings import SettingsError, load_settings

# Subcommand modules, in the order `--help` lists them.
COMMANDS = [
    "runners.demo",
    "runners.services",
    "runners.run",
    "runners.report",
    "runners.train",
    "runners.catalog",
    "runners.generate",
    "runners.replay",
    "runners.bench",
    "runners.deliver",
    "runners.preview",
]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="FILE", help="settings file (TOML); see transforms/settings.py"
    )
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set core.cart_delay=30m (repeatable)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser = argparse.ArgumentParser(
        prog="personalize",
        description="Real-time email personalization as a streaming job (Beam and PyFlink).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub, [common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `personalize` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings(args.config, os.environ, args.overrides)
    except SettingsError as exc:
        parser.error(str(exc))
    try:
        return int(args.func(args, settings) or 0)
    except SettingsError as exc:  # a value only a command can check (e.g. core.trigger_segments)
        parser.error(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
