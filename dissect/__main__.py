"""Command line: python -m dissect {run,layers,export,ablate,toyworld,default-run,explain,
direction,readout,steer,tcav,...} ...

Each subcommand lives in dissect/commands/<name>.py with `add_parser(subparsers)` and
`main(args) -> int`. Known errors print one clear line and exit non-zero, never a traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys

COMMANDS = ["run", "layers", "export", "ablate", "toyworld", "default_run", "sweep", "explain",
            "trace", "rewrite", "direction", "readout", "steer", "tcav"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dissect", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"dissect.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"dissect.commands.{name}":
                continue  # not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except Exception as e:   # dissect.errors imports torch: only load it when needed
        from dissect.errors import USER_ERRORS
        if isinstance(e, USER_ERRORS):
            print(f"error: {e}", file=sys.stderr)
            return 2
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            print(f"error: the disk is full while writing {e.filename or 'output'}; free space "
                  "and run the same command again (finished work is kept and resumes)",
                  file=sys.stderr)
            return 3
        raise
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
