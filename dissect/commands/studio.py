"""dissect studio [--runs DIR] [--port 8501] [--address 127.0.0.1] [--default-run]

Starts the Streamlit app (the checkout's app.py, or the installed dissect_studio/app.py) on 127.0.0.1 unless
--address says otherwise. --default-run first builds the ToyWorld run when DIR has none.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("studio", help="start the Streamlit studio (127.0.0.1 by default)",
                       description=__doc__)
    p.add_argument("--runs", default=os.environ.get("DISSECT_RUNS", "runs"),
                   help="runs folder (default: $DISSECT_RUNS or runs)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="127.0.0.1",
                   help="interface to listen on (0.0.0.0 exposes the studio to the network)")
    p.add_argument("--default-run", action="store_true",
                   help="build the ToyWorld default run first when the runs folder has none")
    p.add_argument("--dry-run", action="store_true", help="print the command, start nothing")
    p.set_defaults(handler=main)


def app_path() -> Path:
    """app.py: the checkout's (beside the `dissect` package), else the installed
    dissect_studio/app.py (`pip install .` ships the app under that one top-level name)."""
    import dissect
    root = Path(dissect.__file__).resolve().parent.parent
    for app in (root / "app.py", root / "dissect_studio" / "app.py"):
        if app.is_file():
            return app
    return root / "dissect_studio" / "app.py"


def studio_command(runs: str, port: int, address: str) -> list[str]:
    """The `streamlit run` command line (the same settings as .streamlit/config.toml)."""
    app = app_path()       # dissect_studio's __main__: streamlit with its imports warmed
    return [sys.executable, str(app.parent / "dissect_studio" / "__main__.py")
            if (app.parent / "dissect_studio" / "__main__.py").is_file()
            else str(app.parent / "__main__.py"), "run", str(app),
            "--server.address", address, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--server.runOnSave", "false",
            "--client.toolbarMode", "minimal", "--theme.base", "light",
            "--theme.primaryColor", "#4C78A8"]


def main(args: argparse.Namespace) -> int:
    app = app_path()
    if not app.is_file():
        print(f"error: the studio's app.py is not at {app}; reinstall the package "
              "(pip install .) or run from a checkout", file=sys.stderr)
        return 2
    cmd = studio_command(args.runs, args.port, args.address)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    if args.default_run:
        from dissect.commands.default_run import build_default_run, complete_runs
        if not complete_runs(Path(args.runs)):
            build_default_run(Path(args.runs))
    print(f"studio: http://{args.address}:{args.port} (runs from {Path(args.runs).resolve()})",
          file=sys.stderr)
    env = {**os.environ, "DISSECT_RUNS": str(Path(args.runs).resolve())}
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":        # become the server: Ctrl-C and kill reach Streamlit itself
        os.execve(cmd[0], cmd, env)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0
