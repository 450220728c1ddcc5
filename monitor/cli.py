"""The ``vqmon`` command line: one sub-command per module, each with ``register``."""
from __future__ import annotations

import argparse
import logging
import sys

from engines import eval_command

from . import __version__, engine_command, report, run_command, score_command
from .jemalloc import reexec_with_jemalloc

COMMANDS = (score_command, report, run_command, eval_command, engine_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqmon", description="Streaming video quality monitor")
    parser.add_argument("--version", action="version", version=f"vqmon {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    # commands that run models set heavy=True: they run faster under jemalloc
    if getattr(args, "heavy", False):
        reexec_with_jemalloc(["-m", "monitor.cli", *argv])
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
