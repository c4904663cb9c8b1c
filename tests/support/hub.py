"""A local Hugging Face Hub cache made by hand (the layout huggingface_hub writes), for offline tests."""

from __future__ import annotations

import shutil
from pathlib import Path


def cached_repo(
    home: Path,
    repo_id: str,
    files: dict[str, str | bytes] | None = None,
    folder: Path | None = None,
    revision: str = "0123abcd",
) -> Path:
    """HOME/hub/models--org--name/snapshots/<revision>/ holding `files` (name: text or bytes) and a copy of
    `folder`'s files, with refs/main naming the revision; returns the snapshot folder."""
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    if folder is not None:
        shutil.copytree(folder, snapshot)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in (files or {}).items():
        target = snapshot / name
        target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot
