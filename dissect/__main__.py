"""Command line: python -m dissect {run,layers,export,ablate,toyworld,default-run,explain,
direction,readout,steer,tcav,visualize,...} ...

Each subcommand lives in dissect/commands/<name>.py with `add_parser(subparsers)` and
`main(args) -> int`. Known errors print one clear line and exit non-zero, never a traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

COMMANDS = ["run", "layers", "export", "ablate", "toyworld", "default_run", "sweep", "explain",
            "trace", "rewrite", "direction", "readout", "steer", "tcav", "data", "studio",
            "visualize", "features"]


def build_parser() -> argparse.ArgumentParser:
    from dissect.version import __version__
    parser = argparse.ArgumentParser(prog="python -m dissect", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"dissect {__version__}")
    parser.add_argument("--offline", action="store_true",
                        help="never download (same as DISSECT_OFFLINE=1); may follow the command")
    for flag, env, what in _DOWNLOAD_FLAGS:
        parser.add_argument(flag, metavar="N", help=f"{what} (env {env}); may follow the command")
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


_DOWNLOAD_FLAGS = (
    ("--download-deadline", "DISSECT_DOWNLOAD_DEADLINE",
     "seconds a whole download may take (default 21600)"),
    ("--download-min-rate", "DISSECT_DOWNLOAD_MIN_RATE",
     "bytes/s below which a download fails, averaged over the window (default 1024)"),
    ("--download-window", "DISSECT_DOWNLOAD_WINDOW",
     "seconds the minimum rate is averaged over (default 60)"),
)


def _global_flags(argv: list[str]) -> list[str]:
    """--offline and the --download-* limits, accepted anywhere: set their environment
    variables and drop them from argv (OptionError for a value that is not a number > 0)."""
    import math

    from dissect.errors import OptionError
    if "--offline" in argv:      # accepted anywhere: `dissect run ... --offline`
        argv = [a for a in argv if a != "--offline"]
        os.environ["DISSECT_OFFLINE"] = "1"
    for flag, env, _ in _DOWNLOAD_FLAGS:
        for i, a in enumerate(list(argv)):
            if a == flag or a.startswith(flag + "="):
                value = a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv)
                                                              else "")
                try:
                    v = float(value)
                except ValueError:
                    v = float("nan")
                if not (math.isfinite(v) and v > 0):
                    raise OptionError(f"{flag} {value!r} must be a number > 0")
                os.environ[env] = str(v)
                argv = argv[:i] + argv[i + (1 if "=" in a else 2):]
                break
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = _global_flags(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from dissect.commands.ranges import check_ranges      # every numeric option, first
        check_ranges(args, getattr(sys.modules.get(args.handler.__module__), "RANGES", None),
                     flags=_flag_names(parser))
        rc = int(args.handler(args) or 0)
        sys.stdout.flush()       # a closed pipe shows here, inside the handler below
        return rc
    except BrokenPipeError:      # `| head` closed stdout: stop quietly, as Unix tools do
        _quiet_stdout()
        return 141
    except Exception as e:
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


def _flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> its long option (`lam` -> `--lambda`), over every subcommand."""
    names: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for k, v in _flag_names(sub).items():
                    names.setdefault(k, v)
        elif action.option_strings:
            names.setdefault(action.dest, max(action.option_strings, key=len))
    return names


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush raises no second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def console() -> None:
    """The `dissect` console command (pyproject [project.scripts])."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
