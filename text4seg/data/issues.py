"""Problems met while reading annotations and building records: `Issue`s for the build report, or a
`DataError` at once in strict mode; `BuildError` when the build itself cannot go on."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path


class DataError(ValueError):
    """Bad input met in strict mode; the message names the file, the record or annotation id, and why."""


@dataclass(frozen=True)
class Issue:
    """One skipped item: the record or annotation id, a short reason code, details, the file."""

    id: str
    reason: str
    detail: str
    file: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def message(self) -> str:
        return f"{self.file}: {self.id}: {self.reason}: {self.detail}"


class IssueLog:
    """Collects issues; in strict mode the first one raises `DataError`."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.items: list[Issue] = []

    def add(self, item_id: str, reason: str, detail: str, file: str | Path) -> None:
        issue = Issue(item_id, reason, detail, str(file))
        if self.strict:
            raise DataError(issue.message())
        self.items.append(issue)


class BuildError(RuntimeError):
    """The build could not finish (e.g. a worker process died); the message says which image and why."""
