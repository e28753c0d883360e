"""Per-shard progress of a distributed run, as a Ray actor (kept free of torch imports, so
the actor starts in a second).

    board = ray.remote(num_cpus=0)(ShardBoard).remote()
    board.report.remote(0, {"phase": "start", "round": 1, "pid": 123})   # from a shard task
    ray.get(board.snapshot.remote())     # {0: {"shard": 0, "attempts": 1, "phase": ...}}
"""
from __future__ import annotations


class ShardBoard:
    """What each shard task last reported, and how often it started in the current round."""

    def __init__(self):
        self.shards: dict[int, dict] = {}

    def report(self, shard: int, info: dict) -> None:
        s = self.shards.setdefault(shard, {"shard": shard, "attempts": 0, "round": 0})
        if info.get("phase") == "start":           # attempts count per round
            s["attempts"] = s["attempts"] + 1 if info.get("round") == s["round"] else 1
        s.update(info)

    def snapshot(self) -> dict[int, dict]:
        return self.shards
