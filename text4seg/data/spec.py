"""Deprecated: the pieces of this module moved to `text4seg.data.issues` (`DataError`, `Issue`,
`IssueLog`) and `text4seg.data.annotations` (`ImageInfo`, `RecordSpec`, `Source`)."""

from text4seg.data.annotations import ImageInfo, RecordSpec, Source
from text4seg.data.issues import DataError, Issue, IssueLog

__all__ = ["DataError", "ImageInfo", "Issue", "IssueLog", "RecordSpec", "Source"]
