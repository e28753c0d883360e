"""Every command's numeric options checked before anything runs: one table, one check.

    check_ranges(args)        # OptionError "--batch-size 0 must be at least 1" (the CLI calls it)
    check_value("--rank", 5, 1, 4096)
    RANGES["batch_size"]      # (1, 100_000): every command with --batch-size gets this range

A command module may add `RANGES = {"random": (2, 1000)}` to narrow an option for itself.
Floats must be finite. Values the table does not know are left to the command.
"""
from __future__ import annotations

import argparse
import math
from typing import Any

from dissect.errors import OptionError

BIG = 10 ** 9
RANGES: dict[str, tuple[float | None, float | None]] = {
    "batch_size": (1, 100_000), "limit": (1, None), "topk": (1, 10_000), "workers": (0, 256),
    "threads": (1, 1024), "random": (0, 10_000), "sample": (1, BIG), "rank": (1, 4096),
    "exemplars": (1, 10_000), "probe_images": (1, BIG), "finetune_steps": (0, 10_000_000),
    "shards": (1, 100_000), "parallel": (1, 1024), "null": (0, 10_000_000), "n": (1, BIG),
    "images": (1, BIG), "epochs": (1, 100_000), "eval_images": (1, BIG), "shift": (0, 10_000),
    "explain_length": (1, 10), "explain_beam": (1, 100_000), "heldout": (1, BIG),
    "quantile": (0, 1), "iou_threshold": (0, 1), "lam": (0, None), "lr": (0, None),
    "download_min_rate": (0, None), "download_deadline": (1, None),
    "download_window": (1, None), "length": (1, 10), "beam": (1, 100_000),
    "size": (8, 8192), "port": (1, 65_535), "seed": (0, 2 ** 32 - 1),
    "heldout_seed": (0, 2 ** 32 - 1), "probe_seed": (0, 2 ** 32 - 1),
    "eval_seed": (0, 2 ** 32 - 1),
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_value(flag: str, value: Any, low: float | None, high: float | None) -> None:
    """OptionError unless low <= value <= high (and finite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and low is not None and high is not None and \
            not (math.isfinite(value) and low <= value <= high):
        raise OptionError(f"{flag} {value} must be between {low:g} and {high:g}")
    if isinstance(value, float) and not math.isfinite(value):
        raise OptionError(f"{flag} {value} must be a finite number")
    if low is not None and value < low:
        raise OptionError(f"{flag} {value} must be at least {low}")
    if high is not None and value > high:
        raise OptionError(f"{flag} {value} must be at most {high:,}")


def check_ranges(args: argparse.Namespace, extra: dict | None = None,
                 flags: dict[str, str] | None = None) -> None:
    """Check every numeric option of `args` against RANGES (narrowed by `extra`); `flags`
    names each dest's option for the message (default: --dest-with-dashes)."""
    table = {**RANGES, **(extra or {})}
    flag = (lambda d: (flags or {}).get(d) or _flag(d))   # noqa: E731
    for dest, value in sorted(vars(args).items()):
        if dest in ("handler",) or isinstance(value, bool):
            continue
        if dest in table:
            check_value(flag(dest), value, *table[dest])
        elif isinstance(value, float) and not math.isfinite(value):
            raise OptionError(f"{flag(dest)} {value} must be a finite number")


__all__ = ["RANGES", "check_ranges", "check_value", "OptionError"]
