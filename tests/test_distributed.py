"""Ray scale-out: a sharded run folder equals the one-process one to the last bit, also after a
worker is killed mid-shard and after the whole run is interrupted; sweeps; bad input.

One local Ray cluster (127.0.0.1, 2 CPUs, no dashboard) serves the module and is shut down at
its end.
"""
from __future__ import annotations

import filecmp
import os
import signal
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from dissect.engine.config import DissectConfig
from dissect.engine.dissection import dissect
from dissect.engine.cluster import check_address, import_ray, start_local  # noqa: E402
from dissect.engine.distributed import dissect_ray, plan_shards  # noqa: E402
from dissect.errors import RunError  # noqa: E402
from dissect.probes.synthetic_broden import make_synthetic_broden  # noqa: E402

LAYERS = ["layer3", "layer4"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    shard_root = tmp_path_factory.mktemp("shards")
    os.environ["DISSECT_SHARD_DIR"] = str(shard_root)    # inherited by the workers
    try:
        start_local(2)          # 127.0.0.1, no dashboard
    except RunError as e:
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        if "timed out during startup" in str(e) and load > 4 * cores:
            pytest.skip(f"Ray's raylet missed its fixed 30 s start-up window three times at "
                        f"load average {load:.0f} on {cores} cores (an overloaded machine)")
        raise
    try:
        yield shard_root
    finally:
        ray.shutdown()
        os.environ.pop("DISSECT_SHARD_DIR", None)


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("probe")
    make_synthetic_broden(d, n=40, image_size=64, mask_size=32, seed=3)
    return d


def _cfg(probe: Path) -> DissectConfig:
    return DissectConfig(model="resnet18", weights="none", layers=LAYERS,
                         probe=f"broden:{probe}", batch_size=4, workers=0, topk=5)


@pytest.fixture(scope="module")
def clean(probe, tmp_path_factory) -> Path:
    """The one-process run everything is compared with."""
    return dissect(_cfg(probe), tmp_path_factory.mktemp("one") / "run", progress=False)


def _same_folder(a: Path, b: Path) -> None:
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert "layers/layer4/iou.npy" in files and "layers/layer4/topk.npz" in files
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    for f in files:
        if f != "run.json":
            assert filecmp.cmp(a / f, b / f, shallow=False), f"{f} differs"


def test_plan_shards_whole_batches():
    assert plan_shards(40, 3, 4) == [(0, 12), (12, 28), (28, 40)]
    assert plan_shards(10, 8, 4) == [(0, 4), (4, 8), (8, 10)]        # never an empty shard
    assert plan_shards(5, 1, 32) == [(0, 5)]


def test_address_that_does_not_answer_fails_fast(probe, tmp_path, capsys):
    """Runs before the module's cluster starts: a process without Ray initialised."""
    from dissect.__main__ import main
    assert not ray.is_initialized()
    t = time.monotonic()
    assert main(["run", "--model", "resnet18", "--weights", "none", "--layer", "layer4",
                 "--probe", f"broden:{probe}", "--ray", "127.0.0.1:9", "--out",
                 str(tmp_path / "r")]) == 2
    assert "no Ray cluster answered" in capsys.readouterr().err
    with pytest.raises(RunError, match="no Ray cluster answered"):
        check_address("192.0.2.123:6379")           # TEST-NET: nothing ever answers
    assert time.monotonic() - t < 10
    with pytest.raises(RunError, match="HOST:PORT"):
        check_address("nonsense")
    with pytest.raises(RunError, match="--baseline rotation does not run with --ray"):
        dissect_ray(DissectConfig(probe=f"broden:{probe}", baseline="rotation"),
                    tmp_path / "b", ray="local:2")
    assert not (tmp_path / "r" / "run.json").exists()     # no run started


def test_cli_run_ray_equals_one_process(cluster, probe, clean, tmp_path):
    from dissect.__main__ import main
    out = tmp_path / "ray"
    assert main(["run", "--model", "resnet18", "--weights", "none", "--layer", ",".join(LAYERS),
                 "--probe", f"broden:{probe}", "--batch-size", "4", "--workers", "0",
                 "--topk", "5", "--quiet", "--ray", "local:2", "--shards", "3",
                 "--out", str(out)]) == 0
    _same_folder(clean, out)
    from dissect.runs.folder import open_run
    run = open_run(out)
    assert run.complete and run.info["ray"]["shards"] == 3
    assert [s["images"] for s in run.info["shards"]] == [[0, 12], [12, 28], [28, 40]]
    assert not (out / "cache").exists()
    assert not any(p.is_file() for p in cluster.rglob("*"))      # node-local caches removed


@pytest.mark.slow
def test_killed_worker_is_retried_and_counts_nothing_twice(cluster, probe, clean, tmp_path,
                                                           monkeypatch):
    monkeypatch.setenv("DISSECT_SHARD_PAUSE", "1.0")       # each batch takes ≥ 1 s
    killed: dict[int, int] = {}
    seen: list[list[dict]] = []

    def kill_one(rows):
        seen.append(rows)
        for r in rows:
            if (not killed and r["phase"] == "forward" and r["pid"] and r["done"] > 0
                    and not r["finished"]):
                os.kill(r["pid"], signal.SIGKILL)            # the worker process, mid-shard
                killed[r["shard"]] = r["pid"]

    out = dissect_ray(_cfg(probe), tmp_path / "ray", ray="local:2", shards=2, progress=False,
                      on_progress=kill_one)
    assert killed, "no shard was caught mid-way"
    (shard,) = killed
    last_forward = [rows for rows in seen if rows[0]["phase"] == "forward"][-1]
    assert last_forward[shard]["attempts"] >= 2 and last_forward[shard]["pid"] != killed[shard]
    _same_folder(clean, out)


def test_interrupted_run_resumes_without_redoing_shards(cluster, probe, clean, tmp_path):
    out = tmp_path / "ray"

    def stop(rows):
        if rows[0]["phase"] == "forward" and any(r["finished"] for r in rows):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dissect_ray(_cfg(probe), out, ray="local:2", shards=2, progress=False, on_progress=stop)
    from dissect.runs.schema import read_info
    assert read_info(out)["status"] == "cancelled"
    saved = sorted(p.name for p in (out / "cache" / "shards").iterdir())
    assert saved and all(name.startswith("r1-") for name in saved)

    resumed: list[list[dict]] = []
    dissect_ray(_cfg(probe), out, ray="local:2", shards=2, progress=False,
                on_progress=resumed.append)
    first = [rows for rows in resumed if rows[0]["phase"] == "forward"][0]
    done_before = {int(name[3:-3]) for name in saved}
    for s in done_before:                     # a saved shard is not forwarded again
        assert first[s]["finished"] and first[s]["attempts"] == 0
    _same_folder(clean, out)


@pytest.mark.slow
def test_sweep_writes_one_run_folder_each(cluster, probe, tmp_path):
    from dissect.__main__ import main
    toml = tmp_path / "runs.toml"
    toml.write_text(f'probe = "broden:{probe}"\nlayers = ["layer4"]\nbatch_size = 8\n'
                    '[[run]]\nmodel = "resnet18"\nweights = "none"\nout = "r18"\n'
                    '[[run]]\nmodel = "resnet18"\nweights = "none"\nseed = 1\nout = "r18-seed1"\n')
    assert main(["sweep", "--ray", "local:2", "--runs", str(toml), "--no-acts",
                 "--out-root", str(tmp_path / "runs")]) == 0
    from dissect.runs.folder import open_run
    a, b = open_run(tmp_path / "runs" / "r18"), open_run(tmp_path / "runs" / "r18-seed1")
    assert a.complete and b.complete and a.config["seed"] == 0 and b.config["seed"] == 1
    assert (a.iou("layer4") != b.iou("layer4")).any()          # two different random nets


def test_sweep_takes_each_run_folders_lock(cluster, probe, tmp_path, capsys):
    """A sweep is refused a folder another writer holds (naming it) and still does the rest."""
    import subprocess
    from dissect.__main__ import main
    held = tmp_path / "runs" / "r18"
    held.mkdir(parents=True)
    hold = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                             "from dissect.runs.lock import acquire\n"
                             "lock = acquire(sys.argv[1]); print('held', flush=True)\n"
                             "time.sleep(120)", str(held)], stdout=subprocess.PIPE, text=True)
    try:
        assert hold.stdout.readline().strip() == "held"
        toml = tmp_path / "runs.toml"
        toml.write_text(f'probe = "broden:{probe}"\nlayers = ["layer4"]\nbatch_size = 8\n'
                        '[[run]]\nmodel = "resnet18"\nweights = "none"\nout = "r18"\n'
                        '[[run]]\nmodel = "resnet18"\nweights = "none"\nseed = 1\n'
                        'out = "r18-seed1"\n')
        assert main(["sweep", "--ray", "local:2", "--runs", str(toml), "--no-acts",
                     "--out-root", str(tmp_path / "runs")]) == 1
    finally:
        hold.kill()
        hold.wait()
    err = capsys.readouterr().err
    assert f"failed: {held}" in err and f"pid {hold.pid}" in err, err
    assert not (held / "run.json").exists()              # nothing written into the held folder
    from dissect.runs.folder import open_run
    assert open_run(tmp_path / "runs" / "r18-seed1").complete


def test_worker_without_the_probe_names_node_and_path(cluster, probe, tmp_path):
    from dataclasses import asdict

    from dissect.engine.shard import ShardError, ShardSpec, forward_shard
    cfg = asdict(_cfg(probe))
    cfg["probe"] = f"broden:{tmp_path / 'not-on-this-node'}"
    spec = ShardSpec(cfg=cfg, shard=0, rows=(0, 4), images=40, key="k", fingerprint="x")
    with pytest.raises(ray.exceptions.RayTaskError) as e:
        ray.get(ray.remote(forward_shard).options(max_retries=0).remote(spec))
    cause = e.value.cause
    assert isinstance(cause, ShardError)
    assert "not-on-this-node" in str(cause) and "on node" in str(cause)
    assert str(cause).split("on node ")[1].split(":")[0].strip()


def test_ray_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RunError, match="pip install"):
        import_ray()
