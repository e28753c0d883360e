"""Downloads: one resumable, size-checked, atomic fetch, and the offline rule.

    path = fetch("https://host/broden1_224.zip", Path("data/broden1_224.zip"))   # progress bar
    path = fetch_weights("https://host/resnet18_places365.pth.tar")   # into torch's cache, once
    why = offline_reason(url)          # None when a download may be tried, else the reason

`fetch` writes to `DEST.part`, resumes it with an HTTP Range request when the server allows
(starting over when it does not), checks the byte count against the server's size, and only
then renames it to DEST: a partial file is never taken for the real one. Offline means
DISSECT_OFFLINE=1 (the CLI's `--offline` sets it), or no route to the host within a few
seconds; then nothing waits on retries and FetchError says what to put where.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from dissect.errors import FetchError

CHUNK = 1 << 16
CONNECT_TIMEOUT = 3.0      # seconds to decide "no route"
READ_TIMEOUT = 30.0        # seconds without a byte before a download counts as cut off
DEADLINE = 6 * 3600.0      # a whole download (Broden is ~1 GB: 6 h allows ~50 kB/s)
MIN_RATE = 1024.0          # bytes/s, averaged over WINDOW, below which a download fails
WINDOW = 60.0              # seconds


def offline_reason(url: str, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """Why `url` cannot be downloaded now (offline flag, no route), or None to go ahead."""
    if os.environ.get("DISSECT_OFFLINE", "").strip().lower() not in ("", "0", "false", "no"):
        return "offline mode (--offline / DISSECT_OFFLINE=1)"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"'{url}' is not an http(s) URL"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if _proxy_for(parts.scheme):
        return None            # the proxy decides; urllib's timeout still applies
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as e:
        return f"no route to {parts.hostname} ({type(e).__name__}: {e})"
    return None


def _proxy_for(scheme: str) -> str | None:
    return urllib.request.getproxies().get(scheme)


def offline_message(what: str, path: str | os.PathLike, url: str, why: str, alt: str = "") -> str:
    """One line: what is missing, where it belongs, the URL to get it from, and why we stopped."""
    return (f"{what} not found at {path} and cannot be downloaded: {why}. On a machine with "
            f"internet download {url} and copy it to {path}" + (f", {alt}" if alt else ""))


def limits() -> tuple[float, float, float]:
    """(deadline s, min rate B/s, window s): DISSECT_DOWNLOAD_DEADLINE, _MIN_RATE, _WINDOW
    (the CLI's --download-deadline, --download-min-rate, --download-window set them)."""
    def num(name: str, default: float) -> float:
        try:
            v = float(os.environ.get(name, ""))
        except ValueError:
            return default
        return v if v == v and v >= 0 else default
    return (num("DISSECT_DOWNLOAD_DEADLINE", DEADLINE), num("DISSECT_DOWNLOAD_MIN_RATE", MIN_RATE),
            max(0.05, num("DISSECT_DOWNLOAD_WINDOW", WINDOW)))


def _source_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".source.json")


def _part_record(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def _read_record(path: Path) -> dict:
    from dissect.runs.safe import read_json
    try:
        rec = read_json(path, path.parent, limit=65536)
    except (ValueError, OSError):
        return {}
    return rec if isinstance(rec, dict) else {}


def _write_record(path: Path, rec: dict) -> None:
    from dissect.runs.atomic import write_json
    write_json(path, rec)


def source_of(dest: str | os.PathLike) -> str | None:
    """The URL a cached download came from (its .source.json), or None (placed by hand)."""
    return _read_record(_source_path(Path(dest))).get("url")


def discard(dest: str | os.PathLike) -> None:
    """Remove a cache entry: the file, its partial download and their records."""
    dest = Path(dest)
    for p in (dest, dest.with_name(dest.name + ".part"), _source_path(dest), _part_record(dest)):
        p.unlink(missing_ok=True)


def cached(url: str, dest: Path) -> bool:
    """Whether `dest` may be reused for `url`: it is a file, and its record (when it has one:
    a file copied there by hand has none) names this URL and its size. An entry from another
    URL or of another size is discarded."""
    if not dest.is_file():
        return False
    rec = _read_record(_source_path(dest))
    if not rec and not os.path.lexists(_source_path(dest)):
        return True                       # placed by hand, as the offline message says
    if rec.get("url") == url and rec.get("size") == dest.stat().st_size:
        return True
    discard(dest)
    return False


def fetch(url: str, dest: str | os.PathLike, *, expected_size: int | None = None,
          progress: bool = True, timeout: float = READ_TIMEOUT, what: str | None = None) -> Path:
    """Download `url` to `dest` (resuming `dest.part`); returns `dest`.

    An existing `dest` is reused only when it came from this URL (dest.source.json: URL, size,
    ETag) or was put there by hand. The download has a deadline and a minimum rate over a window
    (`limits()`); a server whose length does not hold (the same short end twice, another total
    on resume) is a failed download, its partial file removed, never "run it again"."""
    dest = Path(dest)
    what = what or dest.name
    if cached(url, dest):
        return dest
    why = offline_reason(url)
    if why:
        raise FetchError(offline_message(what, dest, url, why))
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    rec = _read_record(_part_record(dest))
    if rec.get("url") != url:             # a partial file of another URL is not ours to resume
        part.unlink(missing_ok=True)
        rec = {"url": url, "stops": []}
    have = part.stat().st_size if part.is_file() else 0
    _write_record(_part_record(dest), rec)          # the part's URL, before any byte of it
    try:
        total, etag = _download(url, part, have, timeout, progress, what, rec)
    except FetchError:
        if not part.exists() and not rec.get("stops"):
            _part_record(dest).unlink(missing_ok=True)
        else:
            _write_record(_part_record(dest), rec)
        raise
    size = part.stat().st_size
    want = expected_size or total
    if want is not None and size != want:
        if size in rec.get("stops", []) or (rec.get("total") not in (None, want)):
            part.unlink(missing_ok=True)
            rec["lying"] = True
            _write_record(_part_record(dest), rec)
            raise FetchError(f"{url} says the file has {want} bytes but its answers end at "
                             f"{size} every time: the server misstates the length, so this is "
                             "a failed download, not a resumable one (partial file removed); "
                             "check the URL or use another server (--url / --weights)")
        rec.setdefault("stops", []).append(size)
        rec["total"] = want
        _write_record(_part_record(dest), rec)
        raise FetchError(f"download of {url} stopped at {size} of {want} bytes (kept {part}); "
                         "run the same command again to resume")
    os.replace(part, dest)
    _write_record(_source_path(dest), {"url": url, "size": dest.stat().st_size, "etag": etag})
    _part_record(dest).unlink(missing_ok=True)
    return dest


def _download(url: str, part: Path, have: int, timeout: float, progress: bool,
              what: str, rec: dict) -> tuple[int | None, str | None]:
    """Append the rest of `url` to `part` from byte `have`; returns (full size if known, ETag).

    Fails (FetchError) past the deadline, or when fewer than min-rate bytes/s arrived over the
    last window; no read waits longer than the window."""
    deadline, min_rate, window = limits()
    t0 = time.monotonic()
    headers = {"User-Agent": "dissect-fetch/1"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=min(timeout, window, max(deadline, 0.05)))
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:      # nothing left to send: the part may already be whole
            total = _range_total(e.headers.get("Content-Range"))
            return (total if total is not None else have), rec.get("etag")
        raise FetchError(f"{url} answered HTTP {e.code} {e.reason}; check the URL "
                         f"(or pass another with --url / --weights)") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(f"cannot download {url} ({reason}); check the URL and the network, "
                         f"or copy the file to {part.with_suffix('')} by hand") from None
    with resp:
        etag = resp.headers.get("ETag")
        if have and resp.status == 206:
            total = _range_total(resp.headers.get("Content-Range"))
            mode, start = "ab", have
            if rec.get("etag") and etag and etag != rec["etag"]:   # the file changed: restart
                mode, start, total = "wb", 0, None
                resp.close()
                part.unlink(missing_ok=True)
                return _download(url, part, 0, timeout, progress, what, {"url": url})
        else:                            # no Range support (200): start over
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode, start = "wb", 0
        rec["etag"] = etag
        bar = _bar(total, start, what, progress)
        got, w_start, w_bytes = start, time.monotonic(), 0
        try:
            with open(part, mode) as f:
                while True:
                    now = time.monotonic()
                    if now - t0 > deadline:
                        raise _Slow(f"download of {url} passed its deadline of {deadline:g} s "
                                    f"(--download-deadline) at {got} bytes")
                    if now - w_start >= window:
                        rate = w_bytes / (now - w_start)
                        if rate < min_rate:
                            raise _Slow(f"download of {url} is too slow: {rate:.0f} B/s over "
                                        f"the last {now - w_start:.0f} s, below "
                                        f"--download-min-rate {min_rate:g} B/s")
                        w_start, w_bytes = now, 0
                    chunk = resp.read1(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    got += len(chunk)
                    w_bytes += len(chunk)
                    bar.update(len(chunk))
        except _Slow as e:
            raise FetchError(f"{e} (kept {part}); run the same command again to resume, or "
                             "raise --download-deadline / lower --download-min-rate") from None
        except (OSError, ValueError, http.client.HTTPException) as e:  # cut off; ENOSPC re-raised
            if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
                raise
            done = part.stat().st_size if part.exists() else 0
            raise FetchError(f"download of {url} stopped at {done}"
                             + (f" of {total}" if total else "") + f" bytes (kept {part}); "
                             "run the same command again to resume") from None
        finally:
            bar.close()
    return total, etag


class _Slow(Exception):
    pass


def _range_total(content_range: str | None) -> int | None:
    """'bytes 100-199/200' or 'bytes */200' -> 200."""
    if content_range and "/" in content_range:
        tail = content_range.rsplit("/", 1)[1].strip()
        return int(tail) if tail.isdigit() else None
    return None


def _bar(total: int | None, initial: int, what: str, progress: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"downloading {what}", file=sys.stderr, disable=not progress,
                dynamic_ncols=True, mininterval=0.5)


def weights_cache_dir() -> Path:
    """Where downloaded checkpoints live: torchvision's own cache, $TORCH_HOME/hub/checkpoints."""
    import torch
    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch_weights(url: str, *, progress: bool = True) -> Path:
    """A checkpoint URL -> its file in the weights cache: downloaded once, checked to load.

    A file that is not a readable weights-only checkpoint is removed again (so the next try
    downloads afresh) and raises ModelError. A cached file is used without any network.
    """
    from dissect.models.checkpoint import read_state_dict
    from dissect.errors import ModelError
    name = Path(urllib.parse.urlsplit(url).path).name
    if not name:
        raise ModelError(f"--weights {url}: the URL names no file; give the checkpoint's URL")
    key = hashlib.sha256(url.encode()).hexdigest()[:16]   # keyed by the full URL
    dest = weights_cache_dir() / f"{key}-{name}"
    fresh = not dest.is_file()
    try:
        fetch(url, dest, progress=progress, what=f"weights {name}")
    except FetchError as e:
        raise ModelError(str(e)) from None
    if fresh:
        try:
            read_state_dict(str(dest))
        except ModelError as e:
            discard(dest)
            raise ModelError(f"{url} is not a usable checkpoint, removed it from the cache: "
                             f"{e}") from None
    return dest
