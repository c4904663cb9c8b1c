"""RefCOCO / RefCOCO+ / RefCOCOg and gRefCOCO annotations -> one record spec per sentence.

Layouts read:

* RefCOCO family: ``refs(unc).p`` / ``refs(umd).p`` / ``refs(google).p`` (a pickle of ref dicts:
  ``ref_id``, ``ann_id``, ``image_id``, ``category_id``, ``split``, ``sentences`` of
  ``{sent, sent_id, tokens, raw}``) next to an ``instances.json``. The pickle is read with
  `text4seg.data.safe_pickle.load_pickle`, which builds only plain data and never runs code.
* gRefCOCO: ``grefs(unc).json`` (the same ref dicts, with ``ann_id`` and ``category_id`` as lists
  and a ``no_target`` flag; a no-target ref has ``ann_id == [-1]``) next to an ``instances.json``.

A multi-target expression merges all its targets under the one label (the expression); a no-target
expression gives an all-background grid. Every annotation is decoded by pycocotools in the builder
whatever its encoding (polygon, uncompressed or compressed RLE), never by reusing another mask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .annotations import ImageInfo, RecordSpec, Source
from .coco import check_annotation, is_clean_text, read_instances, read_instances_unchecked, read_json_text
from .issues import Issue, IssueLog
from .safe_pickle import PickleItems, load_pickle, load_pickle_items


def _as_id_list(value: object) -> list[int] | None:
    """An int or a list of ints as a list; None if it is neither."""
    values = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            return None
        out.append(v)
    return out


def _sentence_text(sentence: object) -> tuple[str | None, str]:
    """(clean text, '') or (None, reason code) for one sentence dict."""
    if not isinstance(sentence, dict):
        return None, "bad_sentence"
    text = sentence.get("sent")
    if text is None:
        text = sentence.get("raw")
    if isinstance(text, bytes) or (isinstance(text, str) and not is_clean_text(text)):
        return None, "non_utf8_sentence"
    if not isinstance(text, str) or not text.strip():
        return None, "empty_sentence"
    return " ".join(text.split()), ""


def _ref_targets(ref: dict, source: Source | _Instances) -> tuple[int, list[int]] | tuple[str, str]:
    """(image id, target annotation ids) of a ref, or (reason, detail) when it cannot be used; ``source``
    gives the images, the usable annotations (by id) and the instances file."""
    ann_ids = _as_id_list(ref.get("ann_id"))
    image_id = ref.get("image_id")
    if ann_ids is None or not isinstance(image_id, int) or isinstance(image_id, bool):
        return "bad_ref", "ann_id or image_id is not an integer (list)"
    no_target = bool(ref.get("no_target", False)) or all(a == -1 for a in ann_ids)
    targets = [] if no_target else [a for a in ann_ids if a != -1]
    if image_id not in source.images:
        return "missing_image", f"image_id {image_id} is not in {source.ann_file.name}"
    missing = [a for a in targets if a not in source.annotations]
    if missing:
        return "missing_annotation", f"annotation(s) {missing} not usable in {source.ann_file.name}"
    wrong_image = [a for a in targets if source.annotations[a]["image_id"] != image_id]
    if wrong_image:
        return "bad_ref", f"annotation(s) {wrong_image} belong to another image"
    if not isinstance(ref.get("sentences"), list):
        return "bad_ref", "ref has no sentences list"
    return image_id, targets


def _sentence_specs(
    ref: dict, ref_key: str, split: str, checked: tuple[int, list[int]], where: _Where, log: IssueLog
) -> list[RecordSpec]:
    """One spec per usable sentence of a checked ref (``checked``: its image id and target annotation
    ids); unusable sentences are reported."""
    image_id, targets = checked
    specs = []
    for k, sentence in enumerate(ref["sentences"]):
        sent_id = sentence.get("sent_id") if isinstance(sentence, dict) else None
        sent_id = sent_id if isinstance(sent_id, int) and not isinstance(sent_id, bool) else -1
        record_id = f"{ref_key}/sent{sent_id if sent_id >= 0 else f'#{k}'}"
        text, reason = _sentence_text(sentence)
        if text is None:
            log.add(record_id, reason, "sentence text missing or not valid UTF-8", where.ref_file)
            continue
        specs.append(
            RecordSpec(
                id=record_id,
                task="refer",
                dataset=where.dataset,
                split=split,
                image_id=image_id,
                expression=text,
                targets=(text,),
                target_anns=(tuple(targets),),
                variant="expression",
                ref_id=ref["ref_id"],
                sent_id=sent_id,
            )
        )
    return specs


@dataclass(frozen=True)
class _Where:
    """The dataset name and refs file a ref's issues and specs name; ``items``: the refs as unpickled,
    when each is to be made plain data where it is used (`PickleItems.plain`)."""

    dataset: str
    ref_file: Path
    items: PickleItems | None = None

    def plain(self, ref: object) -> object:
        return ref if self.items is None else self.items.plain(ref)


def _ref_key(position: int, ref: object, where: _Where, wanted: set[str] | None) -> tuple[str, str] | None:
    """(record id prefix, split) of a ref to plan; None for a ref of another split; a ref that is not a
    dict with an integer ref_id and a split raises `_BadRef`."""
    if not isinstance(ref, dict) or not isinstance(ref.get("ref_id"), int):
        raise _BadRef(f"ref#{position}", "not a dict with an integer ref_id")
    split = ref.get("split")
    if not isinstance(split, str):
        raise _BadRef(f"{where.dataset}/?/ref{ref['ref_id']}", "ref has no split")
    if wanted is not None and split not in wanted:
        return None
    return f"{where.dataset}/{split}/ref{ref['ref_id']}", split


class _BadRef(Exception):
    """A ref unusable before its targets are looked at: (record id, detail), reason ``bad_ref``."""


def _ref_specs(
    ref: dict, ref_key: str, split: str, source: Source | _Instances, where: _Where, log: IssueLog
) -> list[RecordSpec]:
    """The specs of one ref (checked against ``source``); problems reported to ``log``."""
    checked = _ref_targets(ref, source)
    if isinstance(checked[0], str):
        log.add(ref_key, checked[0], checked[1], where.ref_file)
        return []
    return _sentence_specs(ref, ref_key, split, checked, where, log)


def _plan(refs: Iterable[object], source: Source, log: IssueLog, splits: Sequence[str] | None) -> None:
    """Check each ref against the instances and add a spec per sentence to ``source.specs``."""
    where = _Where(source.dataset, source.input_files[0])
    wanted = set(splits) if splits else None
    for position, ref in enumerate(refs):
        try:
            key = _ref_key(position, ref, where, wanted)
        except _BadRef as err:
            log.add(err.args[0], "bad_ref", err.args[1], where.ref_file)
            continue
        if key is not None:
            source.specs.extend(_ref_specs(ref, *key, source, where, log))


def _read_grefs(path: Path) -> object:
    refs = read_json_text(path)
    return refs["refs"] if isinstance(refs, dict) and isinstance(refs.get("refs"), list) else refs


def _load(
    read_refs: Callable[[Path], object],
    refs_file: str | Path,
    image_root: str | Path,
    instances_file: str | Path | None,
    dataset: str,
    splits: Sequence[str] | None,
    strict: bool,
    deferred: bool = False,
) -> Source:
    """Read the instances file, then the refs with ``read_refs``, and plan one spec per sentence (or,
    ``deferred``, leave that to the build's workers: `_load_deferred`)."""
    refs_file = Path(refs_file)
    instances_file = Path(instances_file) if instances_file else refs_file.parent / "instances.json"
    log = IssueLog(strict)
    source = Source(
        dataset=dataset,
        ann_file=instances_file,
        image_root=Path(image_root),
        images={},
        annotations={},
        specs=[],
        input_files=[refs_file, instances_file],
    )
    if deferred:
        _load_deferred(read_refs, refs_file, instances_file, source, splits, log)
        source.issues = log.items
        return source
    source.images, source.annotations, _ = read_instances(instances_file, log)
    refs = read_refs(refs_file)
    if not isinstance(refs, list):
        raise ValueError(f"{refs_file}: expected a list of refs, got {type(refs).__name__}")
    _plan(refs, source, log, splits)
    source.issues = log.items
    return source


class _UsableAnnotations:
    """The usable annotations of an instances file by id, as `read_instances` keeps them (the last
    usable entry of an id wins), each entry checked when a ref first asks for its id (once per process:
    the id index is made on first use, in the process that plans)."""

    def __init__(self, instances: _Instances) -> None:
        self.instances = instances
        self._index: dict[Any, list] | None = None
        self._checked: dict[int, dict | None] = {}

    def get(self, ann_id: int) -> dict | None:
        if ann_id not in self._checked:
            self._checked[ann_id] = self._check(ann_id)
        return self._checked[ann_id]

    def __contains__(self, ann_id: int) -> bool:
        return self.get(ann_id) is not None

    def __getitem__(self, ann_id: int) -> dict:
        found = self.get(ann_id)
        if found is None:
            raise KeyError(ann_id)
        return found

    def _check(self, ann_id: int) -> dict | None:
        inst, found, quiet = self.instances, None, IssueLog()  # an entry's issues are its image's to report
        for entry in self._entries_by_id().get(ann_id, ()):
            found = check_annotation(entry, inst.images, inst.categories, inst.ann_file, quiet) or found
        return found

    def _entries_by_id(self) -> dict[Any, list]:
        if self._index is None:
            self._index = {}
            for entry in self.instances.entries:
                if isinstance(entry, dict):
                    try:
                        self._index.setdefault(entry.get("id"), []).append(entry)
                    except TypeError:  # an unhashable id is no integer id: never usable
                        pass
        return self._index


class _Instances:
    """An instances file as the images' plans read it: checked images and categories, the annotation
    entries as read (`_UsableAnnotations` checks the ones refs ask for)."""

    def __init__(self, path: Path, images: dict[int, ImageInfo], categories: dict[int, str], entries: list):
        self.ann_file = path
        self.images = images
        self.categories = categories
        self.entries = entries
        self.annotations = _UsableAnnotations(self)


@dataclass(frozen=True)
class _PendingImage:
    """One image of a refs file whose checks and specs are left to the process that makes its records:
    the annotation entries that name it (reported here) and its refs ((id prefix, split, ref), file
    order)."""

    image: ImageInfo
    entries: list
    refs: list[tuple[str, str, dict]]
    instances: _Instances
    where: _Where

    def plan(self) -> tuple[dict[int, dict], list[RecordSpec], list[Issue]]:
        """(the annotations the specs need, by id; the specs, in ref and sentence order; the issues of
        the image's annotation entries, refs and sentences), as the eager loader finds them."""
        inst, log = self.instances, IssueLog()
        for entry in self.entries:
            check_annotation(entry, inst.images, inst.categories, inst.ann_file, log)
        specs = [
            spec
            for key, split, ref in self.refs
            for spec in _ref_specs(self.where.plain(ref), key, split, inst, self.where, log)
        ]
        needed = sorted({a for spec in specs for a in spec.ann_ids})
        return {a: inst.annotations[a] for a in needed}, specs, log.items


def _route_refs(
    refs: list, images: dict[int, ImageInfo], where: _Where, wanted: set[str] | None
) -> tuple[dict[Any, list], list[tuple]]:
    """The refs to plan grouped by the image they name; the others, in file order, as (record id,
    detail) for a ref unusable as such or (id prefix, split, ref) for a ref whose image is unknown."""
    by_image: dict[Any, list] = {}
    others: list[tuple] = []
    for position, ref in enumerate(refs):
        if where.items is not None and where.items.needs_plain(ref):
            ref = where.items.plain(ref)
        try:
            key = _ref_key(position, ref, where, wanted)
        except _BadRef as err:
            others.append(err.args)
            continue
        if key is None:
            continue
        image_id = ref.get("image_id")
        try:
            known = image_id in images
        except TypeError:  # unhashable: not an integer
            known = False
        if known:
            by_image.setdefault(image_id, []).append((*key, ref))
        else:
            others.append((*key, ref))
    return by_image, others


def _route_annotations(entries: list, by_image: dict[Any, list]) -> list:
    """Each annotation entry added to the list of the image it names in ``by_image``; the entries that
    name no image there, in file order."""
    rest = []
    for entry in entries:
        try:
            group = by_image.get(entry.get("image_id")) if isinstance(entry, dict) else None
        except TypeError:  # unhashable image id
            group = None
        if group is None:
            rest.append(entry)
        else:
            group.append(entry)
    return rest


def _load_deferred(
    read_refs: Callable[[Path], object],
    refs_file: Path,
    instances_file: Path,
    source: Source,
    splits: Sequence[str] | None,
    log: IssueLog,
) -> None:
    """`_load` leaving each image's annotation checks and specs to the process that makes its records
    (``source.pending``): here the files are read, the images and categories checked and the refs and
    annotation entries grouped by image; the rest is checked here (entries of images without refs,
    refs of unknown images, refs that are not refs), annotations first, as the eager loader reports."""
    images, entries, categories = read_instances_unchecked(instances_file, log)
    source.images = images
    loaded = read_refs(refs_file)
    items = loaded if isinstance(loaded, PickleItems) and not loaded.normalised else None
    refs = loaded.items if isinstance(loaded, PickleItems) else loaded
    if not isinstance(refs, list):
        raise ValueError(f"{refs_file}: expected a list of refs, got {type(refs).__name__}")
    where = _Where(source.dataset, refs_file, items)
    instances = _Instances(instances_file, images, categories, entries)
    by_image, other_refs = _route_refs(refs, images, where, set(splits) if splits else None)
    groups = {image_id: [] for image_id in by_image}
    for entry in _route_annotations(entries, groups):
        check_annotation(entry, images, categories, instances_file, log)
    for other in other_refs:
        if len(other) == 2:
            log.add(other[0], "bad_ref", other[1], refs_file)
        else:
            _ref_specs(where.plain(other[2]), other[0], other[1], instances, where, log)
    source.pending = sorted(
        (_PendingImage(images[i], groups[i], refs, instances, where) for i, refs in by_image.items()),
        key=lambda pending: pending.image.id,
    )


def load_refcoco(
    refs_file: str | Path,
    image_root: str | Path,
    *,
    instances_file: str | Path | None = None,
    dataset: str = "refcoco",
    splits: Sequence[str] | None = None,
    strict: bool = False,
    deferred: bool = False,
) -> Source:
    """RefCOCO/+/g: a refs pickle (read safely) and its instances.json (default: next to it).

    ``deferred``: only read the files and group refs and annotations by image; each image's checks and
    specs are made where its records are (``Source.pending``, what `text4seg build` uses, so that
    ``--num-proc`` spreads them; the issues are the same, reported image by image)."""
    read = load_pickle_items if deferred else load_pickle
    return _load(read, refs_file, image_root, instances_file, dataset, splits, strict, deferred)


def load_grefcoco(
    grefs_file: str | Path,
    image_root: str | Path,
    *,
    instances_file: str | Path | None = None,
    dataset: str = "grefcoco",
    splits: Sequence[str] | None = None,
    strict: bool = False,
    deferred: bool = False,
) -> Source:
    """gRefCOCO: a grefs json (multi-target and no-target refs, optionally under a ``refs`` key) and its
    instances.json (default: next to it); ``deferred`` as for `load_refcoco`."""
    return _load(_read_grefs, grefs_file, image_root, instances_file, dataset, splits, strict, deferred)
