"""Record making: the records of one image from its record specs (docs/RECORDS.md).

Work is split by image: each annotation an image needs is checked and kept as compressed RLE
(`text4seg.data.masks`), and each distinct target set is merged in RLE space and decoded once, shared
by every record of that image with the same targets (e.g. all sentences of a ref). Only the masks of
one record's labels are full size at any time, however many annotations the image has. Template
choices draw from ``default_rng([seed, crc32(record id)])``'s stream (`text4seg.data.seeded`), so records
do not depend on which process made them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from text4seg.codec import DescriptorFormat, check_labels, format_answer, grid_to_text
from text4seg.codec.grid import label_map_to_grid, mask_to_box, mask_to_grid, nearest_indices
from text4seg.codec.rrle import write_checked_grid
from text4seg.protocol import templates
from text4seg.protocol.records import encode_counts

from .annotations import ImageInfo, PendingImage, RecordSpec, Source
from .config import IMAGES_FOLDER, BuildConfig
from .image_files import ImageFileProblem, check_image
from .issues import Issue, IssueLog
from .masks import (
    BadAnnotation,
    column_major_pixels,
    merged_mask,
    rle_box,
    rle_boxes,
    sample_many,
    sample_rle_at,
    segmentation_rle,
    union_rle,
)
from .seeded import RecordRng, record_rngs

ImageResult = tuple[list[dict], list[Issue], Counter]
"""What building one image gives: its records, the issues met, counters."""


@dataclass(frozen=True)
class ImageJob:
    """One image and everything needed to write its records (sent to a worker process as is)."""

    image: ImageInfo
    image_root: Path  # resolved
    annotations: dict[int, dict]
    specs: list[RecordSpec]
    ann_file: str
    config: BuildConfig
    fmt: DescriptorFormat
    pending: PendingImage | None = None
    """Set when the image's annotations and specs are still to be checked and made (`planned`)."""
    issues: tuple[Issue, ...] = ()
    """Issues met planning the image (reported before its records' own)."""

    def planned(self) -> ImageJob:
        """This job with its pending image's annotations, specs and issues (itself when not pending)."""
        if self.pending is None:
            return self
        annotations, specs, issues = self.pending.plan()
        return replace(self, annotations=annotations, specs=specs, issues=tuple(issues), pending=None)


def image_jobs(source: Source, config: BuildConfig) -> list[ImageJob]:
    """One job per image that has specs (or, for a deferred source, per pending image), in image id
    order."""
    root = source.image_root.resolve()
    fmt = config.fmt  # one object for every job (the property makes a new one each time)
    ann_file = str(source.ann_file)
    if source.pending:
        return [
            ImageJob(pending.image, root, {}, [], ann_file, config, fmt, pending)
            for pending in source.pending
        ]
    by_image: dict[int, list[RecordSpec]] = {}
    for spec in source.specs:
        by_image.setdefault(spec.image_id, []).append(spec)
    jobs = []
    for image_id in sorted(by_image):
        specs = by_image[image_id]
        needed = sorted({a for spec in specs for a in spec.ann_ids})
        jobs.append(
            ImageJob(
                image=source.images[image_id],
                image_root=root,
                annotations={a: source.annotations[a] for a in needed},
                specs=specs,
                ann_file=ann_file,
                config=config,
                fmt=fmt,
            )
        )
    return jobs


_MARK = (
    "\ue000"  # a private-use character; `_Geometry.text` falls back to `grid_to_text` for labels holding it
)


_ROWS_SEEN: dict[tuple[DescriptorFormat, int], dict] = {}
"""Row text already written with the stand-in labels, by format and label count (rows repeat across
images: each distinct row is written once per process)."""
_MAX_ROWS_SEEN = 20_000


@lru_cache(maxsize=64)
def _stand_ins(n_labels: int) -> list[str]:
    return [f"{_MARK}{k}{_MARK}" for k in range(1, n_labels)]


@dataclass(frozen=True)
class _Geometry:
    """What a record's targets look like: shared by every sentence with the same annotations."""

    grid: np.ndarray
    masks: list[str]
    box: list[float]
    present: tuple[bool, ...]
    _texts: dict[DescriptorFormat, str] = field(default_factory=dict, compare=False)
    counters: tuple[str, ...] = field(init=False, compare=False)
    """The build counters each record of these targets adds one to."""

    def __post_init__(self) -> None:
        lost = () if self.grid.any() else ("target_lost_in_grid",)
        object.__setattr__(self, "counters", lost if any(self.present) else ("no_target",))

    def text(self, labels: list[str], fmt: DescriptorFormat) -> str:
        """`grid_to_text(self.grid, labels, fmt)` for labels that passed `check_labels`. The runs do
        not depend on the labels, so the text is written once, with stand-ins, and each record puts
        its own labels in."""
        if any(_MARK in label for label in labels):
            return grid_to_text(self.grid, labels, fmt)
        stand_ins = _stand_ins(len(labels))
        if fmt not in self._texts:  # the grid's values index the labels by construction
            rows_seen = _ROWS_SEEN.setdefault((fmt, len(labels)), {})
            if len(rows_seen) > _MAX_ROWS_SEEN:
                rows_seen.clear()
            self._texts[fmt] = write_checked_grid(self.grid, [labels[0], *stand_ins], fmt, rows_seen)
        text = self._texts[fmt]
        for stand_in, label in zip(stand_ins, labels[1:], strict=True):
            text = text.replace(stand_in, label)
        return text


@lru_cache(maxsize=256)
def _cell_pixels(height: int, width: int, rows: int, cols: int) -> np.ndarray:
    """The column-major index of the pixel under each cell centre (`nearest_indices`)."""
    return column_major_pixels(height, nearest_indices(height, rows), nearest_indices(width, cols))


def _union_geometry(union: dict, cells: np.ndarray, box: list[float]) -> _Geometry:
    """One label, nearest cells: everything from the union's compressed RLE, which is never decoded
    (``cells`` samples only the cell-centre pixels, ``box`` is `rle_box`'s; byte-identical to the
    decoding path)."""
    return _Geometry(
        grid=cells.astype(np.int32), masks=[union["counts"].decode("ascii")], box=box, present=(bool(box),)
    )


def _one_label_union(
    job: ImageJob, target_anns: tuple[tuple[int, ...], ...], rles: dict[int, dict]
) -> dict | None:
    """The union of a one-label target set when its grid is sampled at cell centres (nearest), else None."""
    if len(target_anns) != 1 or job.config.method != "nearest":
        return None
    return union_rle([rles[a] for a in target_anns[0]], job.image.height, job.image.width)


def _centres(job: ImageJob) -> np.ndarray:
    return _cell_pixels(job.image.height, job.image.width, job.fmt.rows, job.fmt.cols)


def _geometry(job: ImageJob, target_anns: tuple[tuple[int, ...], ...], rles: dict[int, dict]) -> _Geometry:
    union = _one_label_union(job, target_anns, rles)
    if union is not None:
        return _union_geometry(union, sample_rle_at(union, _centres(job)), rle_box(union))
    height, width = job.image.height, job.image.width
    unions = [merged_mask([rles[a] for a in anns], height, width) for anns in target_anns]
    if len(unions) == 1:
        label_masks = unions
        grid = mask_to_grid(unions[0], job.fmt.grid, job.config.method).astype(np.int32)
    else:
        label_map = np.zeros((height, width), dtype=np.int32, order="F")
        for k in sorted(range(len(unions)), key=lambda k: -int(unions[k].sum())):
            label_map[unions[k]] = k + 1
        del unions
        label_masks = [label_map == k + 1 for k in range(len(target_anns))]
        grid = label_map_to_grid(label_map, job.fmt.grid, job.config.method)
    foreground = (
        np.logical_or.reduce(label_masks) if label_masks else np.zeros((height, width), bool, order="F")
    )
    box = mask_to_box(foreground)
    return _Geometry(
        grid=grid,
        masks=[encode_counts(m) for m in label_masks],
        box=[float(v) for v in box] if box is not None else [],
        present=tuple(bool(m.any()) for m in label_masks),
    )


def _targets(job: ImageJob, spec: RecordSpec) -> tuple[str, ...]:
    """The labels of grid values 1, 2, …: the spec's, or the build's fixed referring label."""
    if job.config.target_label is not None and spec.task == "refer":
        return (job.config.target_label,)
    return spec.targets


def _source_column(job: ImageJob, spec: RecordSpec) -> dict:
    return {
        "dataset": spec.dataset,
        "split": spec.split,
        "image_id": spec.image_id,
        "ann_ids": spec.ann_ids,
        "ref_id": spec.ref_id,
        "sent_id": spec.sent_id,
        "file_name": job.image.file_name,
    }


def _image_value(job: ImageJob, path: Path) -> str | dict:
    """The ``images`` entry of a record: an embeddable image, an absolute path, or the path in the
    build's own images folder (relative to the build folder)."""
    store = job.config.image_store
    if store == "embed":
        return {"path": str(path), "bytes": None}
    if store == "paths":
        return str(path)
    return f"{IMAGES_FOLDER}/{path.relative_to(job.image_root).as_posix()}"


def _record(
    job: ImageJob, image: str | dict, spec: RecordSpec, geometry: _Geometry, rng: RecordRng, stats: Counter
) -> dict:
    """One record; ``image`` is the image's `_image_value` (made once per image: a dict is copied)."""
    fmt = job.fmt
    labels = [fmt.background, *_targets(job, spec)]
    text = geometry.text(labels, fmt)
    for counter in geometry.counters:
        stats[counter] += 1
    turn = templates.render(rng, spec.task, spec.variant, spec.expression, spec.targets, geometry.present)
    question = [{"type": "image", "text": None}, {"type": "text", "text": turn.question}]
    answer = [{"type": "text", "text": format_answer(turn.answer, text, fmt)}]
    return {
        "id": spec.id,
        "images": [image if isinstance(image, str) else dict(image)],
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        "task": spec.task,
        "expression": spec.expression,
        "labels": labels,
        "grid": [fmt.rows, fmt.cols],
        "width": job.image.width,
        "height": job.image.height,
        "masks": list(geometry.masks),
        "box": list(geometry.box),
        "ignore": "",
        "source": _source_column(job, spec),
    }


def _annotation_rles(job: ImageJob, stats: Counter) -> tuple[dict[int, dict], dict[int, BadAnnotation]]:
    """Each needed annotation as checked compressed RLE, or the reason it was refused."""
    rles: dict[int, dict] = {}
    failures: dict[int, BadAnnotation] = {}
    for ann_id, ann in job.annotations.items():
        dropped: list[str] = []
        try:
            rles[ann_id] = segmentation_rle(ann["segmentation"], job.image.height, job.image.width, dropped)
        except BadAnnotation as err:
            failures[ann_id] = err.with_traceback(None)  # no frame kept: no cycle for the collector
        stats["polygon_parts_dropped"] += len(dropped)
    stats["annotations_decoded"] += len(rles)
    return rles, failures


def _spec_problem(
    job: ImageJob, spec: RecordSpec, failures: dict[int, BadAnnotation]
) -> tuple[str, str] | None:
    """(reason, detail) when a spec cannot become a record: a refused annotation or a bad label."""
    bad = [a for a in spec.ann_ids if a in failures]
    if bad:
        err = failures[bad[0]]
        return err.reason, f"annotation {bad[0]}: {err.detail}"
    try:
        check_labels([job.fmt.background, *_targets(job, spec)], job.fmt)
    except ValueError as err:
        return "bad_label", str(err)
    return None


@dataclass
class _CheckedImage:
    """An image of a chunk after its checks: its file (or the problem with it), its annotations as RLE
    (or why each was refused), the geometry of each target set, counters."""

    job: ImageJob
    path: Path | None
    problem: ImageFileProblem | None
    rles: dict[int, dict]
    failures: dict[int, BadAnnotation]
    stats: Counter
    shapes: dict[tuple[tuple[int, ...], ...], _Geometry] = field(default_factory=dict)


def _check(job: ImageJob) -> _CheckedImage:
    """Check an image's file and decode its annotations once (problems are kept, reported later in order)."""
    stats: Counter = Counter()
    image = job.image
    if not job.specs:  # a planned image none of whose refs could be used: nothing to write
        return _CheckedImage(job, None, None, {}, {}, stats)
    try:
        path = check_image(job.image_root, image.file_name, image.width, image.height, root_resolved=True)
    except ImageFileProblem as err:
        return _CheckedImage(job, None, err.with_traceback(None), {}, {}, stats)
    rles, failures = _annotation_rles(job, stats)
    return _CheckedImage(job, path, None, rles, failures, stats)


def _add_geometries(images: list[_CheckedImage]) -> None:
    """The geometry of every target set whose annotations were all usable; the cell centres of the
    chunk's one-label sets are sampled in one pass (`text4seg.data.masks.sample_many`)."""
    batch, queued = [], set()
    for k, image in enumerate(images):
        if image.path is None:
            continue
        for spec in image.job.specs:
            anns = spec.target_anns
            if anns in image.shapes or (k, anns) in queued or any(a in image.failures for a in spec.ann_ids):
                continue
            union = _one_label_union(image.job, anns, image.rles)
            if union is None:
                image.shapes[anns] = _geometry(image.job, anns, image.rles)
            else:
                queued.add((k, anns))
                batch.append((image, anns, union))
    unions = [union for *_, union in batch]
    cells = sample_many(unions, [_centres(image.job) for image, *_ in batch])
    for (image, anns, union), grid, box in zip(batch, cells, rle_boxes(unions), strict=True):
        image.shapes[anns] = _union_geometry(union, grid, box)


def _write(image: _CheckedImage, rngs: dict[str, RecordRng]) -> ImageResult:
    """The records of a checked image, and the issues of its specs (in spec order); ``rngs``: each
    record's generator of template choices, by record id."""
    job = image.job
    log = IssueLog(job.config.strict)
    for issue in job.issues:
        log.add(issue.id, issue.reason, issue.detail, issue.file)
    if not job.specs:
        return [], log.items, image.stats
    if image.problem is not None:
        for spec in job.specs:
            log.add(
                spec.id, image.problem.reason, f"image {job.image.id}: {image.problem.detail}", job.ann_file
            )
        return [], log.items, image.stats
    records = []
    value = _image_value(job, image.path)
    for spec in job.specs:
        problem = _spec_problem(job, spec, image.failures)
        if problem is not None:
            log.add(spec.id, *problem, job.ann_file)
            continue
        geometry = image.shapes[spec.target_anns]
        records.append(_record(job, value, spec, geometry, rngs[spec.id], image.stats))
    return records, log.items, image.stats


def build_images(jobs: list[ImageJob]) -> list[ImageResult]:
    """The records of each image of a chunk (the unit a worker process is given), in order: every file
    and annotation checked once, the grids of all one-label target sets sampled together, then each
    spec's record written. The jobs share one build config (its seed); pending images are planned first
    (`ImageJob.planned`)."""
    jobs = [job.planned() for job in jobs]
    images = [_check(job) for job in jobs]
    _add_geometries(images)
    ids = [spec.id for job in jobs for spec in job.specs]
    rngs = dict(zip(ids, record_rngs(jobs[0].config.seed, ids), strict=True)) if jobs else {}
    return [_write(image, rngs) for image in images]


def build_image(job: ImageJob) -> ImageResult:
    """All records of one image: check its file and annotations once, then write each spec's record."""
    return build_images([job])[0]
