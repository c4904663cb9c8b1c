"""Where a model comes from, checked before anything loads, and the `text4seg.json` saved beside it.

A model or adapter is a local folder, a Hub repository already in the local Hugging Face cache, or a
Hub repository to download. `check_source` tells these apart at once and fails fast, with one line,
when none applies: a path that is not a folder ("no such folder"), an id that is not a valid Hub id,
or a Hub id that is not cached while `HF_HUB_OFFLINE` is set or the Hub cannot be reached (instead of
transformers' minutes of retries).

`saved_settings(model, adapter)` reads how the model must be asked (`text4seg.protocol.asking`): the
`text4seg.json` beside the base model (a folder, or a Hub repository through the cache, downloaded
only when online) and beside the adapter, the adapter's values winning. A folder that is itself an
adapter (a LoRA `final/` or `checkpoint-N/`) counts as the adapter, its recorded base as the model.

`hub_options(model, adapter)` says how loading reads the Hub (`cache_dir`, `local_files_only`), from the
environment as it is at the call: the cache only when `HF_HUB_OFFLINE` is set or a Hub id is to be read
while the Hub cannot be reached (huggingface_hub reads both variables once, when it is imported).
No torch is imported here.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from text4seg.protocol.asking import SETTINGS_FILE, Asking

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
"""A Hub repository id: `name` or `owner/name` (letters, digits, `.`, `_`, `-`; 96 characters at most)."""
HUB_PROBE_TIMEOUT_S = 3.0
"""Seconds to wait for a TCP connection to the Hub before calling it unreachable."""
_TRUE = {"1", "on", "yes", "true"}


class ModelSourceError(FileNotFoundError):
    """A model or adapter that is neither a local folder, nor cached, nor reachable on the Hub (one line)."""


def is_repo_id(name: str) -> bool:
    """Whether `name` has the form of a Hub repository id (it may still not exist)."""
    return len(name) <= 96 and bool(REPO_ID.match(name)) and ".." not in name and "--" not in name


def hub_offline() -> bool:
    """Whether `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) asks for no Hub access."""
    return any(
        os.environ.get(var, "").strip().lower() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_endpoint() -> str:
    """The Hub's address (`HF_ENDPOINT`, else https://huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co"


@functools.lru_cache(maxsize=4)
def _reachable(endpoint: str) -> bool:
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def hub_reachable() -> bool:
    """Whether a TCP connection to the Hub opens within `HUB_PROBE_TIMEOUT_S` (asked once per process)."""
    return not hub_offline() and _reachable(hub_endpoint())


def hub_cache_dir() -> Path:
    """The local Hugging Face Hub cache (`HF_HUB_CACHE`, else `HF_HOME`/hub, else ~/.cache/huggingface/hub),
    read from the environment at each call."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def cached_hub_file(repo_id: str, filename: str) -> Path | bool | None:
    """The cached copy of `filename` of a Hub repository: its path, False when the cache knows the file
    does not exist there, None when the cache does not know."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir())
    if isinstance(found, str):
        return Path(found)
    return None if found is None else False


def check_source(name: str | os.PathLike, what: str = "model", probe: str = "config.json") -> None:
    """Raise `ModelSourceError` unless `name` is a local folder, a Hub id whose `probe` file is cached,
    or a Hub id while the Hub is reachable (and `HF_HUB_OFFLINE` is not set)."""
    text = str(name)
    path = Path(text).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise ModelSourceError(f"{what} {text}: is a file, not a model folder or Hub id")
    if not is_repo_id(text):
        raise ModelSourceError(f"{what} {text}: no such folder (and not a Hugging Face Hub id)")
    if isinstance(cached_hub_file(text, probe), Path):
        return
    if hub_offline():
        raise ModelSourceError(
            f"{what} {text}: no such folder, and not in the local Hugging Face cache (HF_HUB_OFFLINE is set)"
        )
    if not hub_reachable():
        raise ModelSourceError(
            f"{what} {text}: no such folder, not in the local Hugging Face cache, and the Hub "
            f"({hub_endpoint()}) cannot be reached"
        )


def check_sources(model: str | os.PathLike, adapter: str | os.PathLike | None = None) -> None:
    """`check_source` for a model, its adapter, and the base an adapter folder names."""
    from text4seg.models.loading import adapter_base, is_adapter_dir

    check_source(model, "model")
    if adapter is not None:
        check_source(adapter, "adapter", probe="adapter_config.json")
    elif is_adapter_dir(model):
        check_source(adapter_base(model), f"base model of adapter {model}")


def named_sources(model: str | os.PathLike, adapter: str | os.PathLike | None = None) -> list[str]:
    """The model, its adapter, and the base an adapter folder given as the model names."""
    from text4seg.models.loading import adapter_base, is_adapter_dir

    if adapter is None and is_adapter_dir(model):
        return [str(model), adapter_base(model)]
    return [str(n) for n in (model, adapter) if n is not None]


def _hub_ids(names: list[str]) -> list[str]:
    return [n for n in names if not Path(n).expanduser().exists() and is_repo_id(n)]


def hub_options(
    model: str | os.PathLike, adapter: str | os.PathLike | None = None, local_files_only: bool | None = None
) -> dict[str, Any]:
    """`cache_dir` (`hub_cache_dir`) and `local_files_only` for loading `model` (and `adapter`):
    `local_files_only` as given, else True when `HF_HUB_OFFLINE` is set or one of them is a Hub id while
    the Hub cannot be reached (so a cached model loads at once, without the Hub client's retries)."""
    if local_files_only is None:
        hub_ids = _hub_ids(named_sources(model, adapter))
        local_files_only = hub_offline() or (bool(hub_ids) and not hub_reachable())
    return {"cache_dir": str(hub_cache_dir()), "local_files_only": bool(local_files_only)}


def offline_when_unreachable(*names: str | os.PathLike | None) -> bool:
    """For a command's process: when one of `names` is a Hub id (no local folder), `check_source` found
    it cached, and the Hub cannot be reached, switch this process to offline mode (`HF_HUB_OFFLINE=1`),
    so transformers loads from the cache at once instead of retrying the Hub. True when it switched."""
    if not _hub_ids([str(n) for n in names if n is not None]) or hub_offline() or hub_reachable():
        return False
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    return True


# -- text4seg.json beside a model --------------------------------------------------------------------
def hub_file(repo_id: str, filename: str) -> Path | None:
    """`filename` of a Hub repository: from the cache, else downloaded when online; None when absent."""
    cached = cached_hub_file(repo_id, filename)
    if cached is not None:
        return cached or None
    if not hub_reachable():
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=hub_cache_dir()))
    except (EntryNotFoundError, HfHubHTTPError, OSError):
        return None


def asking_beside(source: str | os.PathLike) -> Asking | None:
    """The `Asking` saved as text4seg.json in a model folder or Hub repository (None when there is none;
    ValueError naming the file when it is invalid)."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return Asking.load(path)
    if path.exists() or not is_repo_id(text):
        return None
    found = hub_file(text, SETTINGS_FILE)
    return None if found is None else Asking.load(found.parent)


def saved_settings(model: str | os.PathLike, adapter: str | os.PathLike | None = None) -> dict[str, Any]:
    """How `model` (with `adapter`) must be asked, as `Segmenter` keywords: the base's text4seg.json,
    overridden key by key by the adapter's (empty when neither has one)."""
    from text4seg.models.loading import adapter_base, is_adapter_dir

    sources = [model] if adapter is None else [model, adapter]
    if adapter is None and is_adapter_dir(model):
        sources = [adapter_base(model), model]
    settings: dict[str, Any] = {}
    for source in sources:
        asking = asking_beside(source)
        if asking is not None:
            settings.update(asking.to_dict())
    if "grid" in settings:
        settings["grid"] = tuple(settings["grid"])
    return settings
