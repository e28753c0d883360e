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
import http.client
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from dissect.errors import FetchError

CHUNK = 1 << 16
CONNECT_TIMEOUT = 3.0      # seconds to decide "no route"
READ_TIMEOUT = 30.0        # seconds without a byte before a download counts as cut off


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


def fetch(url: str, dest: str | os.PathLike, *, expected_size: int | None = None,
          progress: bool = True, timeout: float = READ_TIMEOUT, what: str | None = None) -> Path:
    """Download `url` to `dest` (resuming `dest.part`); returns `dest`. Existing `dest` is reused."""
    dest = Path(dest)
    what = what or dest.name
    if dest.is_file():
        return dest
    why = offline_reason(url)
    if why:
        raise FetchError(offline_message(what, dest, url, why))
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    total = _download(url, part, have, timeout, progress, what)
    size = part.stat().st_size
    want = expected_size or total
    if want is not None and size != want:
        raise FetchError(f"download of {url} stopped at {size} of {want} bytes (kept {part}); "
                         "run the same command again to resume")
    os.replace(part, dest)
    return dest


def _download(url: str, part: Path, have: int, timeout: float, progress: bool,
              what: str) -> int | None:
    """Append the rest of `url` to `part` from byte `have`; returns the full size if known."""
    headers = {"User-Agent": "dissect-fetch/1"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                      timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:      # nothing left to send: the part may already be whole
            total = _range_total(e.headers.get("Content-Range"))
            return total if total is not None else have
        raise FetchError(f"{url} answered HTTP {e.code} {e.reason}; check the URL "
                         f"(or pass another with --url / --weights)") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(f"cannot download {url} ({reason}); check the URL and the network, "
                         f"or copy the file to {part.with_suffix('')} by hand") from None
    with resp:
        if have and resp.status == 206:
            total = _range_total(resp.headers.get("Content-Range"))
            mode, start = "ab", have
        else:                            # no Range support (200): start over
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode, start = "wb", 0
        bar = _bar(total, start, what, progress)
        try:
            with open(part, mode) as f:
                while True:
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    bar.update(len(chunk))
        except (OSError, ValueError, http.client.HTTPException) as e:  # cut off; ENOSPC re-raised
            if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
                raise
            done = part.stat().st_size if part.exists() else 0
            raise FetchError(f"download of {url} stopped at {done}"
                             + (f" of {total}" if total else "") + f" bytes (kept {part}); "
                             "run the same command again to resume") from None
        finally:
            bar.close()
    return total


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
    dest = weights_cache_dir() / name
    fresh = not dest.is_file()
    try:
        fetch(url, dest, progress=progress, what=f"weights {name}")
    except FetchError as e:
        raise ModelError(str(e)) from None
    if fresh:
        try:
            read_state_dict(str(dest))
        except ModelError as e:
            dest.unlink(missing_ok=True)
            raise ModelError(f"{url} is not a usable checkpoint, removed it from the cache: "
                             f"{e}") from None
    return dest
