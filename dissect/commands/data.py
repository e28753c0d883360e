"""python -m dissect data broden --out DIR [--size 224|227] [--url URL] [--keep-zip]

Downloads NetDissect's Broden zip (progress bar; a partial download resumes with HTTP Range and
is size-checked), unpacks it to DIR/broden1_<size>, checks the result with the Broden reader and
prints the `--probe broden:...` to use next. Nothing appears at DIR/broden1_<size> until it has
been unpacked whole and read back; a bad zip, a full disk or a 404 is one line on stderr.
"""
from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
import zipfile
from pathlib import Path, PurePosixPath

BRODEN_URLS = {   # as in CSAILVision/NetDissect's script/dlbroden.sh
    224: "http://netdissect.csail.mit.edu/data/broden1_224.zip",
    227: "http://netdissect.csail.mit.edu/data/broden1_227.zip",
}
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="download probe data sets (Broden)", description=__doc__)
    which = p.add_subparsers(dest="dataset", required=True)
    b = which.add_parser("broden", help="download, unpack and check NetDissect's Broden",
                         description=__doc__)
    b.add_argument("--out", required=True, help="folder to put broden1_<size> in")
    b.add_argument("--size", type=int, default=224, choices=sorted(BRODEN_URLS))
    b.add_argument("--url", default=None, help="zip URL (default: NetDissect's official one)")
    b.add_argument("--keep-zip", action="store_true", help="keep the zip after unpacking")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from dissect.errors import FetchError
    out = Path(args.out)
    name = f"broden1_{args.size}"
    target = out / name
    url = args.url or BRODEN_URLS[args.size]
    if (target / "index.csv").is_file():
        n = _check(target)
        print(f"{target} already holds Broden ({n} images)", file=sys.stderr)
    else:
        from dissect.models.fetch import discard, fetch, source_of
        zpath = out / f"{name}.zip"
        fetch(url, zpath, progress=not args.quiet, what=f"{name}.zip")   # reused only if from url
        source = source_of(zpath) or f"{zpath}, put there by hand"
        try:
            n = unpack_broden(zpath, target)
        except FetchError as e:
            if "zip is kept" not in str(e):     # a bad zip never serves another try
                discard(zpath)
            raise FetchError(f"{e} (the zip came from {source})") from None
        if not args.keep_zip:
            discard(zpath)
        print(f"unpacked {n} images to {target}", file=sys.stderr)
    print(f"--probe broden:{target}")
    return 0


def unpack_broden(zpath: Path, target: Path) -> int:
    """Unpack a Broden zip into `target` (via a temp folder, renamed once it reads back).

    Returns the image count. A zip that is not a zip, or holds no Broden index, is removed
    (so the next run downloads afresh) and raises FetchError; so do a full disk and a CRC error.
    """
    from dissect.errors import FetchError
    if not zipfile.is_zipfile(zpath):
        zpath.unlink(missing_ok=True)
        raise FetchError(f"{zpath} is not a zip archive (removed it); check the URL")
    tmp = target.with_name(f".{target.name}.unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(zpath) as zf:
            members, prefix = _broden_members(zf, zpath)
            need = sum(m.file_size for m in members)
            free = shutil.disk_usage(target.parent).free
            if need > free:
                raise FetchError(f"unpacking {zpath.name} needs {need / 1e9:.2f} GB but "
                                 f"{target.parent} has {free / 1e9:.2f} GB free; free space "
                                 "and run the same command again (the zip is kept)")
            for m in members:
                rel = PurePosixPath(m.filename).relative_to(prefix) if prefix else \
                    PurePosixPath(m.filename)
                dest = tmp.joinpath(*rel.parts)
                if m.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(dest, "wb") as f:
                    shutil.copyfileobj(src, f, 1 << 20)
        n = _check(tmp)
        os.replace(tmp, target)
        return n
    except zipfile.BadZipFile as e:
        zpath.unlink(missing_ok=True)
        raise FetchError(f"{zpath} is damaged ({e}; removed it); run again to download it "
                         "afresh") from None
    except OSError as e:
        if e.errno in _FULL:
            raise FetchError(f"the disk filled up while unpacking {zpath.name} into "
                             f"{target.parent} ({os.strerror(e.errno)}); free space and run "
                             "the same command again (the zip is kept)") from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _broden_members(zf: zipfile.ZipFile, zpath: Path) -> tuple[list[zipfile.ZipInfo], str]:
    """The members under the folder holding index.csv (shallowest), refusing unsafe paths."""
    from dissect.errors import FetchError
    infos = zf.infolist()
    for m in infos:
        p = PurePosixPath(m.filename)
        if p.is_absolute() or ".." in p.parts:
            zpath.unlink(missing_ok=True)
            raise FetchError(f"{zpath} holds an unsafe path '{m.filename}' (removed it)")
    index = sorted((m.filename for m in infos if PurePosixPath(m.filename).name == "index.csv"),
                   key=lambda f: f.count("/"))
    if not index:
        zpath.unlink(missing_ok=True)
        raise FetchError(f"{zpath} is a zip but not Broden: it has no index.csv (removed it); "
                         "check the URL")
    prefix = str(PurePosixPath(index[0]).parent)
    prefix = "" if prefix == "." else prefix
    keep = [m for m in infos if not prefix or m.filename.startswith(prefix + "/")]
    return keep, prefix


def _check(folder: Path) -> int:
    """Read `folder` with the Broden reader (tables, first image); returns the image count."""
    from dissect.probes.broden import BrodenProbe
    from dissect.errors import FetchError
    from dissect.errors import ProbeError
    try:
        probe = BrodenProbe(folder)
        if len(probe) == 0:
            raise ProbeError("it lists no images")
        probe[0]
    except ProbeError as e:
        raise FetchError(f"the unpacked data is not readable Broden: {e}") from None
    return len(probe)
