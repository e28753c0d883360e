"""Ray clusters for dissect.engine.distributed: connect to one, or start a local one.

    with ray_cluster("local:2") as cpus: ...        # 127.0.0.1 only, no dashboard, shut down after
    with ray_cluster("10.0.0.5:6379") as cpus: ...  # a running cluster (`ray start --head`)
    check_address("10.0.0.5:6379")                  # RunError within seconds when nothing answers

Ray is an optional dependency: without it, import_ray() says how to install it.
"""
from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from typing import Iterator

from dissect.errors import RunError

INSTALL = "install it with `pip install 'ray[default]'` (or `pip install -e '.[ray]'`)"
CONNECT_TIMEOUT = 5.0        # seconds to wait for a cluster address to answer


def import_ray():
    """The ray module, or RunError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RunError(f"--ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


def parse_ray(spec: str) -> tuple[str, int | str]:
    """'local' / 'local:N' -> ('local', N); anything else -> ('address', spec)."""
    spec = (spec or "").strip()
    if spec == "local" or spec.startswith("local:"):
        _, _, n = spec.partition(":")
        try:
            cpus = int(n) if n else (os.cpu_count() or 1)
        except ValueError:
            raise RunError(f"--ray {spec}: use local, local:N (N workers) or a cluster address "
                           "HOST:PORT") from None
        if cpus < 1:
            raise RunError(f"--ray {spec}: N must be at least 1")
        return "local", cpus
    if not spec:
        raise RunError("--ray needs local, local:N or a cluster address HOST:PORT")
    return "address", spec


def check_address(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """RunError within `timeout` s when nothing answers at HOST:PORT (ray.init would hang)."""
    if address == "auto":
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise RunError(f"--ray {address}: a cluster address is HOST:PORT (the one "
                       "`ray start --head` prints, port 6379 by default), or local[:N]")
    try:
        t0 = time.monotonic()
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            conn.settimeout(max(0.2, 0.9 * timeout - (time.monotonic() - t0)))
            speaks = _speaks_grpc(conn)
    except OSError as e:
        raise RunError(f"--ray {address}: no Ray cluster answered within {timeout:.0f} s "
                       f"({e.strerror or e}); start one with `ray start --head` on that machine, "
                       "check the address and firewall, or use --ray local:N") from None
    if not speaks:
        raise RunError(f"--ray {address}: something answers there, but not a Ray cluster (no "
                       "gRPC reply); check the port (`ray start --head` prints the address, "
                       "6379 by default), or use --ray local:N")


# The HTTP/2 client preface and an empty SETTINGS frame. A Ray head's GCS is a gRPC (HTTP/2)
# server: it answers with its own SETTINGS frame (type 0x4 in the 9-byte frame header). An HTTP/1
# server, a database or a silent port answers otherwise, closes, or says nothing until the
# timeout, and then ray.init would retry for ~30 s with a wall of C++ warnings.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _speaks_grpc(conn: socket.socket) -> bool:
    """True when the peer on `conn` replies to an HTTP/2 preface with a SETTINGS frame."""
    try:
        conn.sendall(H2_PREFACE)
        head = b""
        while len(head) < 9:
            chunk = conn.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:                          # timeout or reset: not a gRPC server
        return False
    return head[3] == 0x04


def start_local(cpus: int, attempts: int = 3) -> None:
    """ray.init a local cluster of `cpus` CPUs on 127.0.0.1, without a dashboard. Ray gives its
    raylet 30 s to start; a machine under heavy load can miss that, so try again."""
    import ray
    for attempt in range(attempts):
        try:
            ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                     log_to_driver=False, configure_logging=False)
            return
        except Exception as e:   # ray raises a bare Exception for the startup timeout
            ray.shutdown()
            if "timed out during startup" not in str(e) or attempt == attempts - 1:
                raise RunError(f"--ray local: the local Ray cluster did not start ({e})") from None


@contextmanager
def ray_cluster(spec: str, threads: int = 1) -> Iterator[int]:
    """Connect to (or start) the Ray cluster `spec` names; yields its CPU count.

    A Ray already initialised in this process is used as it is (and left running); one started
    here is shut down on exit. Local clusters listen on 127.0.0.1 only, without a dashboard.
    """
    ray = import_ray()
    kind, arg = parse_ray(spec)
    started = False
    if not ray.is_initialized():
        if kind == "local":
            start_local(int(arg) * max(1, threads))
        else:
            check_address(str(arg))
            try:
                ray.init(address=str(arg), log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise RunError(f"--ray {arg}: could not join the Ray cluster ({e}); is it "
                               "running `ray start --head`, with the same Ray version?") from None
        started = True
    try:
        yield int(ray.cluster_resources().get("CPU", 1))
    finally:
        if started:
            ray.shutdown()
