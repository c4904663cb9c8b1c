"""The table of annotation sources: refcoco and grefcoco load deferred where workers are forked."""

from __future__ import annotations

import pytest

from text4seg.data import sources
from text4seg.data.build import BuildConfig
from text4seg.data.records import build_images, image_jobs

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _load(kind: str, synth) -> sources.Source:
    ann = {"refcoco": synth.refs, "grefcoco": synth.grefs}[kind]
    request = sources.SourceRequest(ann_files=[ann], image_root=synth.images)
    source_kind = sources.source_kind(kind)
    return source_kind.load(request, source_kind.input_files(request))[0]


def _records(source: sources.Source) -> list[dict]:
    jobs = image_jobs(source, BuildConfig(progress=False))
    return [record for records, _, _ in build_images(jobs) for record in records]


@pytest.mark.parametrize("kind", ["refcoco", "grefcoco"])
def test_deferred_where_workers_fork_eager_where_they_spawn(synth, monkeypatch, kind):
    deferred = _load(kind, synth)
    assert deferred.pending and not deferred.specs
    monkeypatch.setattr(sources, "forks", lambda: False)  # spawned workers would be sent every ref
    eager = _load(kind, synth)
    assert eager.specs and not eager.pending
    assert _records(deferred) == _records(eager)
