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
from pathlib import Path

from .annotations import RecordSpec, Source
from .coco import is_clean_text, read_instances, read_json_text
from .issues import IssueLog
from .safe_pickle import load_pickle


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


def _ref_targets(ref: dict, source: Source) -> tuple[int, list[int]] | tuple[str, str]:
    """(image id, target annotation ids) of a ref, or (reason, detail) when it cannot be used."""
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
    ref: dict, ref_key: str, split: str, image_id: int, targets: list[int], source: Source, log: IssueLog
) -> None:
    """One spec per usable sentence of a checked ref; unusable sentences are reported."""
    for k, sentence in enumerate(ref["sentences"]):
        sent_id = sentence.get("sent_id") if isinstance(sentence, dict) else None
        sent_id = sent_id if isinstance(sent_id, int) and not isinstance(sent_id, bool) else -1
        record_id = f"{ref_key}/sent{sent_id if sent_id >= 0 else f'#{k}'}"
        text, reason = _sentence_text(sentence)
        if text is None:
            log.add(record_id, reason, "sentence text missing or not valid UTF-8", source.input_files[0])
            continue
        source.specs.append(
            RecordSpec(
                id=record_id,
                task="refer",
                dataset=source.dataset,
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


def _plan(refs: Iterable[object], source: Source, log: IssueLog, splits: Sequence[str] | None) -> None:
    """Check each ref against the instances and add a spec per sentence to ``source.specs``."""
    ref_file = source.input_files[0]
    wanted = set(splits) if splits else None
    for position, ref in enumerate(refs):
        if not isinstance(ref, dict) or not isinstance(ref.get("ref_id"), int):
            log.add(f"ref#{position}", "bad_ref", "not a dict with an integer ref_id", ref_file)
            continue
        split = ref.get("split")
        if not isinstance(split, str):
            log.add(f"{source.dataset}/?/ref{ref['ref_id']}", "bad_ref", "ref has no split", ref_file)
            continue
        if wanted is not None and split not in wanted:
            continue
        ref_key = f"{source.dataset}/{split}/ref{ref['ref_id']}"
        checked = _ref_targets(ref, source)
        if isinstance(checked[0], str):
            log.add(ref_key, checked[0], checked[1], ref_file)
            continue
        _sentence_specs(ref, ref_key, split, checked[0], checked[1], source, log)


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
) -> Source:
    """Read the instances file, then the refs with ``read_refs``, and plan one spec per sentence."""
    refs_file = Path(refs_file)
    instances_file = Path(instances_file) if instances_file else refs_file.parent / "instances.json"
    log = IssueLog(strict)
    images, annotations, _ = read_instances(instances_file, log)
    source = Source(
        dataset=dataset,
        ann_file=instances_file,
        image_root=Path(image_root),
        images=images,
        annotations=annotations,
        specs=[],
        input_files=[refs_file, instances_file],
    )
    refs = read_refs(refs_file)
    if not isinstance(refs, list):
        raise ValueError(f"{refs_file}: expected a list of refs, got {type(refs).__name__}")
    _plan(refs, source, log, splits)
    source.issues = log.items
    return source


def load_refcoco(
    refs_file: str | Path,
    image_root: str | Path,
    *,
    instances_file: str | Path | None = None,
    dataset: str = "refcoco",
    splits: Sequence[str] | None = None,
    strict: bool = False,
) -> Source:
    """RefCOCO/+/g: a refs pickle (read safely) and its instances.json (default: next to it)."""
    return _load(load_pickle, refs_file, image_root, instances_file, dataset, splits, strict)


def load_grefcoco(
    grefs_file: str | Path,
    image_root: str | Path,
    *,
    instances_file: str | Path | None = None,
    dataset: str = "grefcoco",
    splits: Sequence[str] | None = None,
    strict: bool = False,
) -> Source:
    """gRefCOCO: a grefs json (multi-target and no-target refs, optionally under a ``refs`` key) and its
    instances.json (default: next to it)."""
    return _load(_read_grefs, grefs_file, image_root, instances_file, dataset, splits, strict)
