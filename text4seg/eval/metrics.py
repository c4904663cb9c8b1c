"""Segmentation metrics in pure numpy: referring (cIoU, gIoU, prec@, N-acc, T-acc, REC Acc@0.5) and semantic mIoU.

Every metric is an accumulator whose state is a handful of integer counts plus one exactly-summed float
(`ExactSum`), so states updated on different processes merge to the very numbers one process would
compute, whatever the split and the order of the samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PRECISION_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
REC_THRESHOLD = 0.5

Box = tuple[float, float, float, float]


class ExactSum:
    """A float sum that is exact and independent of the order of additions (Shewchuk's partials).

    `value` is the correctly rounded exact sum, as `math.fsum` of every number ever added, so two
    processes summing halves and merging give the bit-identical result of one process summing all.
    """

    __slots__ = ("partials",)

    def __init__(self, partials: Iterable[float] = ()) -> None:
        self.partials: list[float] = []
        for x in partials:
            self.add(x)

    def add(self, x: float) -> None:
        x = float(x)
        if not math.isfinite(x):
            raise ValueError(f"ExactSum only adds finite numbers, got {x!r}")
        kept = []
        for y in self.partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                kept.append(lo)
            x = hi
        kept.append(x)
        self.partials = kept

    def merge(self, other: ExactSum) -> None:
        for x in other.partials:
            self.add(x)

    @property
    def value(self) -> float:
        return math.fsum(self.partials)


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D mask, got shape {array.shape}")
    return array.astype(bool, copy=False)


def intersection_union(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> tuple[int, int]:
    """Pixel counts |pred ∧ gt| and |pred ∨ gt| of two same-shaped binary masks, over the pixels that
    `ignore` (an optional same-shaped bool mask) leaves in."""
    p, g = _as_bool(pred, "pred"), _as_bool(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground-truth shape {g.shape}")
    if ignore is not None:
        keep = ~_ignored(ignore, p.shape)
        p, g = p & keep, g & keep
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))


def _ignored(ignore: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = _as_bool(ignore, "ignore")
    if mask.shape != shape:
        raise ValueError(f"ignore mask shape {mask.shape} differs from the masks' shape {shape}")
    return mask


def iou_from_counts(intersection: int, union: int) -> float:
    """IoU of one sample; an empty prediction on an empty target is a perfect 1."""
    return 1.0 if union == 0 else intersection / union


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two binary masks (1 when both are empty)."""
    return iou_from_counts(*intersection_union(pred, gt))


def box_iou(a: Sequence[float] | None, b: Sequence[float] | None) -> float:
    """IoU of two `(x0, y0, x1, y1)` boxes (x1/y1 exclusive); 0 when either is missing or degenerate."""
    if a is None or b is None or len(a) != 4 or len(b) != 4:
        return 0.0
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = max(0.0, ax1 - ax0) * max(0.0, ay1 - ay0) + max(0.0, bx1 - bx0) * max(0.0, by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def mask_box(mask: np.ndarray) -> Box | None:
    """The tight box of a mask's foreground (`text4seg.mask_to_box`), None when it is empty."""
    from text4seg.codec import mask_to_box

    box = mask_to_box(_as_bool(mask, "mask"))
    return None if box is None else tuple(float(v) for v in box)


@dataclass(frozen=True)
class SampleScore:
    """What one referring sample contributed, kept for the per-sample report."""

    intersection: int
    union: int
    iou: float
    pred_empty: bool
    gt_empty: bool
    box_iou: float | None  # None when the sample has no ground-truth box (no target)

    def as_dict(self) -> dict[str, Any]:
        return {
            "intersection": self.intersection,
            "union": self.union,
            "iou": self.iou,
            "pred_empty": self.pred_empty,
            "gt_empty": self.gt_empty,
            "box_iou": self.box_iou,
        }


class ReferMetrics:
    """Accumulates referring-segmentation metrics one sample at a time.

    - cIoU = ΣI / ΣU over all samples (1 when every sample is empty on empty, so ΣU is 0);
    - gIoU = mean per-sample IoU, an empty prediction on an empty target counting 1;
    - prec@t = share of samples with IoU ≥ t;
    - N-acc = share of no-target samples predicted empty; T-acc = share of target samples predicted non-empty;
    - REC Acc@0.5 = share of samples with a ground-truth box whose predicted-mask box has IoU ≥ 0.5 with it.
    """

    def __init__(self, thresholds: Sequence[float] = PRECISION_THRESHOLDS) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        self.n = 0
        self.intersection = 0
        self.union = 0
        self.iou_sum = ExactSum()
        self.hits = [0] * len(self.thresholds)
        self.n_no_target = 0
        self.n_no_target_empty = 0
        self.n_target = 0
        self.n_target_nonempty = 0
        self.n_box = 0
        self.n_box_hit = 0

    def update(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        gt_box: Sequence[float] | None = None,
        *,
        box: bool = True,
        ignore: np.ndarray | None = None,
    ) -> SampleScore:
        """Add one sample; `gt_box` (x0, y0, x1, y1) enables REC scoring (skip it with `box=False`).

        `ignore` (bool, mask-shaped) marks pixels left out of scoring: they count in no intersection or
        union, nor in deciding whether the prediction or the target is empty."""
        if ignore is not None:
            keep = ~_ignored(ignore, np.shape(pred))
            pred, gt = _as_bool(pred, "pred") & keep, _as_bool(gt, "gt") & keep
        inter, union = intersection_union(pred, gt)
        pred_empty = not np.any(pred)
        gt_empty = not np.any(gt)
        iou = iou_from_counts(inter, union)
        self.n += 1
        self.intersection += inter
        self.union += union
        self.iou_sum.add(iou)
        for k, t in enumerate(self.thresholds):
            self.hits[k] += int(iou >= t)
        if gt_empty:
            self.n_no_target += 1
            self.n_no_target_empty += int(pred_empty)
        else:
            self.n_target += 1
            self.n_target_nonempty += int(not pred_empty)
        b_iou = None
        if box and gt_box is not None and len(gt_box) == 4:
            b_iou = box_iou(mask_box(pred), gt_box)
            self.n_box += 1
            self.n_box_hit += int(b_iou >= REC_THRESHOLD)
        return SampleScore(inter, union, iou, bool(pred_empty), bool(gt_empty), b_iou)

    def merge(self, other: ReferMetrics) -> ReferMetrics:
        """Fold another accumulator (e.g. another process's) into this one; returns self."""
        if other.thresholds != self.thresholds:
            raise ValueError(f"cannot merge thresholds {other.thresholds} into {self.thresholds}")
        for name in _REFER_COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.hits = [a + b for a, b in zip(self.hits, other.hits, strict=True)]
        self.iou_sum.merge(other.iou_sum)
        return self

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable state; `from_state_dict` rebuilds the accumulator exactly."""
        state: dict[str, Any] = {name: getattr(self, name) for name in _REFER_COUNTS}
        state.update(
            thresholds=list(self.thresholds), hits=list(self.hits), iou_partials=list(self.iou_sum.partials)
        )
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ReferMetrics:
        acc = cls(state["thresholds"])
        for name in _REFER_COUNTS:
            setattr(acc, name, int(state[name]))
        acc.hits = [int(h) for h in state["hits"]]
        acc.iou_sum = ExactSum(state["iou_partials"])
        return acc

    def compute(self) -> dict[str, Any]:
        """The metrics; a share whose denominator is 0 is None (e.g. N-acc on data with no no-target sample)."""
        return {
            "n": self.n,
            "cIoU": self.intersection / self.union if self.union else (1.0 if self.n else None),
            "gIoU": self.iou_sum.value / self.n if self.n else None,
            **{
                f"prec@{t:g}": (h / self.n if self.n else None)
                for t, h in zip(self.thresholds, self.hits, strict=True)
            },
            "N-acc": _share(self.n_no_target_empty, self.n_no_target),
            "T-acc": _share(self.n_target_nonempty, self.n_target),
            "n_no_target": self.n_no_target,
            "n_target": self.n_target,
            "REC Acc@0.5": _share(self.n_box_hit, self.n_box),
            "n_box": self.n_box,
        }


_REFER_COUNTS = (
    "n",
    "intersection",
    "union",
    "n_no_target",
    "n_no_target_empty",
    "n_target",
    "n_target_nonempty",
    "n_box",
    "n_box_hit",
)


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def confusion_matrix(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    ignore_index: int | None = 255,
    ignore: np.ndarray | None = None,
) -> np.ndarray:
    """K×K int64 counts, rows = ground truth, columns = prediction; pixels whose gt is `ignore_index` are
    skipped, and so are the pixels an `ignore` bool mask (same shape) marks.

    A ground-truth value outside [0, K) other than `ignore_index`, or a prediction outside [0, K) on a
    counted pixel, is an error: a silently dropped pixel would bias every IoU.
    """
    p = np.asarray(pred)
    g = np.asarray(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground-truth shape {g.shape}")
    keep = np.ones(g.shape, dtype=bool) if ignore is None else ~_ignored(ignore, g.shape)
    p = p.astype(np.int64, copy=False)[keep]
    g = g.astype(np.int64, copy=False)[keep]
    if ignore_index is not None:
        kept = g != ignore_index
        g, p = g[kept], p[kept]
    for name, values in (("ground-truth", g), ("predicted", p)):
        bad = (values < 0) | (values >= num_classes)
        if bad.any():
            raise ValueError(f"{name} class {int(values[bad][0])} is outside [0, {num_classes})")
    cm = np.bincount(g * num_classes + p, minlength=num_classes * num_classes)
    return cm.reshape(num_classes, num_classes).astype(np.int64)


class SemanticMetrics:
    """Semantic segmentation over K classes, through one K×K confusion matrix.

    IoU_k = TP_k / (TP_k + FP_k + FN_k); mIoU is the mean over classes present in the ground truth or
    the predictions (union > 0); None when every class is absent. With `background` set (the index of
    the background class), `mIoU_fg` leaves that class out. Pixel accuracy is reported alongside.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = 255,
        background: int | None = None,
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names given for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = (
            list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
        )
        self.ignore_index = ignore_index
        self.background = background
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
        """Add one label map pair (pixels marked in the bool mask `ignore` left out); returns this
        sample's confusion matrix."""
        cm = confusion_matrix(pred, gt, self.num_classes, self.ignore_index, ignore)
        self.confusion += cm
        return cm

    def merge(self, other: SemanticMetrics) -> SemanticMetrics:
        if other.class_names != self.class_names:
            raise ValueError(f"cannot merge classes {other.class_names} into {self.class_names}")
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.confusion += other.confusion
        return self

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "ignore_index": self.ignore_index,
            "background": self.background,
            "confusion": self.confusion.tolist(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> SemanticMetrics:
        acc = cls(
            int(state["num_classes"]), state["class_names"], state["ignore_index"], state.get("background")
        )
        acc.confusion = np.asarray(state["confusion"], dtype=np.int64).reshape(
            acc.num_classes, acc.num_classes
        )
        return acc

    def per_class_iou(self) -> np.ndarray:
        """IoU per class, NaN where the class is absent from both ground truth and prediction."""
        tp = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def compute(self) -> dict[str, Any]:
        ious = self.per_class_iou()
        present = ~np.isnan(ious)
        total = int(self.confusion.sum())
        fg = present.copy()
        if self.background is not None:
            fg[self.background] = False
        return {
            "mIoU": float(ious[present].mean()) if present.any() else None,
            "mIoU_fg": float(ious[fg].mean()) if fg.any() else None,
            "pixel_acc": float(np.trace(self.confusion) / total) if total else None,
            "n_classes_present": int(present.sum()),
            "per_class_iou": {
                name: (float(v) if ok else None)
                for name, v, ok in zip(self.class_names, ious, present, strict=True)
            },
            "per_class": self.per_class(),
        }

    def per_class(self) -> dict[str, dict[str, Any]]:
        """Per class: IoU and accuracy (share of its ground-truth pixels predicted as it; None when it has
        none), and its ground-truth and predicted pixel counts."""
        tp = np.diag(self.confusion)
        gt, pred = self.confusion.sum(1), self.confusion.sum(0)
        ious = self.per_class_iou()
        return {
            name: {
                "iou": None if np.isnan(ious[k]) else float(ious[k]),
                "acc": float(tp[k] / gt[k]) if gt[k] else None,
                "gt_pixels": int(gt[k]),
                "pred_pixels": int(pred[k]),
            }
            for k, name in enumerate(self.class_names)
        }
