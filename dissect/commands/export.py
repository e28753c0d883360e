"""python -m dissect export RUN --format netdissect|json|parquet|csv [--layer L] [--out FILE]"""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a run's unit tables as csv/json/parquet/netdissect",
                       description=__doc__)
    p.add_argument("run", help="run folder")
    p.add_argument("--format", default="csv", choices=["csv", "json", "parquet", "netdissect"])
    p.add_argument("--layer", default=None, help="one layer (default: all)")
    p.add_argument("--out", default=None,
                   help="output file (netdissect with several layers: a folder); "
                        "default RUN/export/")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from dissect.runs.export import export_run
    for path in export_run(args.run, args.format, layer=args.layer, out=args.out):
        print(path)
    return 0
