"""The Hugging Face hub cache, as the timm and transformers zoos use it: cached or not, offline rule.

    path = cached_file("timm/resnet18.a1_in1k", ["model.safetensors", "pytorch_model.bin"])
    require_online("weights timm:resnet18", "timm/resnet18.a1_in1k", "model.safetensors")
    with hub_offline():            # a cached file is read without any network request
        model = timm.create_model("resnet18", pretrained=True)

The cache is huggingface_hub's own ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)
and the server is $HF_ENDPOINT (default https://huggingface.co), both read by huggingface_hub.
Offline means what it means for every download here (dissect.models.fetch.offline_reason):
DISSECT_OFFLINE=1 / --offline, or no route to the hub within seconds.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from dissect.errors import ModelError


def hub_cache() -> Path:
    """huggingface_hub's cache folder (where downloaded repos live)."""
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo: str) -> Path:
    """Where `repo` (ORG/NAME) lives in the hub cache: models--ORG--NAME."""
    return hub_cache() / ("models--" + repo.replace("/", "--"))


def file_url(repo: str, filename: str, revision: str | None = None) -> str:
    """The URL the hub serves `filename` of `repo` from ($HF_ENDPOINT respected)."""
    from huggingface_hub import hf_hub_url
    return hf_hub_url(repo, filename, revision=revision)


def cached_file(repo: str, filenames: Sequence[str], revision: str | None = None) -> str | None:
    """The cached path of the first of `filenames` present in the hub cache, else None."""
    from huggingface_hub import try_to_load_from_cache
    for name in filenames:
        try:
            path = try_to_load_from_cache(repo, name, revision=revision)
        except ValueError:         # a malformed repo id: not cached, the caller says why
            return None
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def require_online(what: str, repo: str, filename: str, revision: str | None = None,
                   fix: str = "pass the file with --weights FILE", alt: str = "") -> None:
    """Raise ModelError (one line: file, cache folder, URL, why) when the hub cannot be reached."""
    from dissect.models.fetch import offline_reason
    url = file_url(repo, filename, revision)
    why = offline_reason(url)
    if why:
        raise ModelError(offline_message(what, repo, filename, url, why, fix, alt))


def offline_message(what: str, repo: str, filename: str, url: str, why: str,
                    fix: str = "pass the file with --weights FILE", alt: str = "") -> str:
    """As dissect.models.fetch.offline_message, for a file that belongs in the hub cache."""
    home = os.environ.get("HF_HOME", "unset, so ~/.cache/huggingface")
    return (f"{what} ({filename} of {repo}) not found in the hub cache {repo_folder(repo)} and "
            f"cannot be downloaded: {why}. On a machine with internet download {url} and {fix}, "
            f"or copy that machine's {repo_folder(repo).name} folder into {hub_cache()} "
            f"($HF_HOME is {home})" + (f"; {alt}" if alt else ""))


@contextmanager
def hub_offline() -> Iterator[None]:
    """huggingface_hub makes no request inside the block: cached files only (HF_HUB_OFFLINE)."""
    from huggingface_hub import constants
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def first_line(e: BaseException, limit: int = 200) -> str:
    """An exception as one short line: `Type: first line of the message`."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:limit] if text else ''}".rstrip(": ")
