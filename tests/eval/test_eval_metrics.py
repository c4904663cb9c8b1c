"""Metrics on hand-computed cases, edge cases, and exact merging of accumulator states."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from text4seg.eval.metrics import (
    ExactSum,
    ReferMetrics,
    SemanticMetrics,
    box_iou,
    confusion_matrix,
    intersection_union,
    mask_iou,
)


def _mask(shape, *cells):
    m = np.zeros(shape, dtype=bool)
    for r, c in cells:
        m[r, c] = True
    return m


def _rect(shape, r0, r1, c0, c1):
    m = np.zeros(shape, dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def test_iou_of_overlapping_masks():
    pred = _rect((4, 4), 0, 2, 0, 2)  # 4 px
    gt = _rect((4, 4), 0, 2, 1, 4)  # 6 px, 2 shared
    assert intersection_union(pred, gt) == (2, 8)
    assert mask_iou(pred, gt) == pytest.approx(0.25)


def test_ciou_giou_and_precision_on_two_samples():
    acc = ReferMetrics()
    s1 = acc.update(_rect((4, 4), 0, 2, 0, 2), _rect((4, 4), 0, 2, 1, 4), box=False)
    s2 = acc.update(_rect((4, 4), 1, 2, 0, 4), _rect((4, 4), 1, 2, 0, 4), box=False)
    assert (s1.intersection, s1.union, s1.iou) == (2, 8, 0.25)
    assert (s2.intersection, s2.union, s2.iou) == (4, 4, 1.0)
    m = acc.compute()
    assert m["n"] == 2
    assert m["cIoU"] == pytest.approx(6 / 12)
    assert m["gIoU"] == pytest.approx(0.625)
    assert [m[f"prec@{t}"] for t in ("0.5", "0.6", "0.7", "0.8", "0.9")] == [0.5] * 5
    assert m["T-acc"] == 1.0 and m["N-acc"] is None and m["REC Acc@0.5"] is None


def test_precision_threshold_is_inclusive():
    acc = ReferMetrics()
    acc.update(_rect((2, 4), 0, 1, 0, 4), _rect((2, 4), 0, 2, 0, 4), box=False)  # IoU exactly 0.5
    m = acc.compute()
    assert m["prec@0.5"] == 1.0 and m["prec@0.6"] == 0.0


def test_empty_prediction_on_empty_target_counts_one_and_adds_nothing_to_ciou():
    acc = ReferMetrics()
    empty = np.zeros((4, 4), dtype=bool)
    s = acc.update(empty, empty, box=False)
    assert s.iou == 1.0 and s.pred_empty and s.gt_empty
    acc.update(_mask((4, 4), (0, 0)), _rect((4, 4), 0, 2, 0, 2), box=False)  # I=1, U=4
    m = acc.compute()
    assert m["cIoU"] == pytest.approx(1 / 4)
    assert m["gIoU"] == pytest.approx((1 + 0.25) / 2)
    assert m["N-acc"] == 1.0 and m["T-acc"] == 1.0
    assert m["n_no_target"] == 1 and m["n_target"] == 1


def test_only_empty_on_empty_samples():
    acc = ReferMetrics()
    empty = np.zeros((3, 3), dtype=bool)
    acc.update(empty, empty, box=False)
    m = acc.compute()
    assert m["cIoU"] == 1.0 and m["gIoU"] == 1.0 and m["N-acc"] == 1.0 and m["T-acc"] is None


def test_empty_prediction_on_target_and_prediction_on_no_target():
    acc = ReferMetrics()
    empty = np.zeros((4, 4), dtype=bool)
    s1 = acc.update(empty, _rect((4, 4), 0, 2, 0, 2), box=False)  # missed target
    s2 = acc.update(_rect((4, 4), 0, 1, 0, 3), empty, box=False)  # hallucinated target
    assert s1.iou == 0.0 and s2.iou == 0.0
    m = acc.compute()
    assert m["cIoU"] == 0.0 and m["gIoU"] == 0.0
    assert m["T-acc"] == 0.0 and m["N-acc"] == 0.0
    assert m["prec@0.5"] == 0.0


def test_gres_accuracies_count_separately():
    acc = ReferMetrics()
    empty = np.zeros((4, 4), dtype=bool)
    target = _rect((4, 4), 1, 3, 1, 3)
    acc.update(empty, empty, box=False)  # no-target, right
    acc.update(empty, empty, box=False)  # no-target, right
    acc.update(target, empty, box=False)  # no-target, wrong
    acc.update(target, target, box=False)  # target, found
    acc.update(empty, target, box=False)  # target, missed
    m = acc.compute()
    assert m["N-acc"] == pytest.approx(2 / 3)
    assert m["T-acc"] == pytest.approx(1 / 2)
    assert m["gIoU"] == pytest.approx(3 / 5)


def test_box_iou():
    assert box_iou((0, 0, 4, 4), (0, 0, 4, 4)) == 1.0
    assert box_iou((0, 0, 4, 4), (2, 0, 6, 4)) == pytest.approx(8 / 24)
    assert box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert box_iou(None, (0, 0, 1, 1)) == 0.0
    assert box_iou((1, 1, 1, 5), (1, 1, 1, 5)) == 0.0  # degenerate


def test_rec_accuracy_uses_the_predicted_mask_box():
    acc = ReferMetrics()
    pred = _rect((8, 8), 2, 6, 1, 5)  # box (1, 2, 5, 6), x1/y1 exclusive
    s_hit = acc.update(pred, pred, gt_box=[1, 2, 5, 6])
    s_miss = acc.update(pred, pred, gt_box=[3, 2, 7, 6])  # IoU 8/24
    s_empty = acc.update(np.zeros((8, 8), bool), pred, gt_box=[1, 2, 5, 6])
    acc.update(np.zeros((8, 8), bool), np.zeros((8, 8), bool), gt_box=[])  # no target: not scored
    assert s_hit.box_iou == pytest.approx(1.0)
    assert s_miss.box_iou == pytest.approx(1 / 3)
    assert s_empty.box_iou == 0.0
    m = acc.compute()
    assert m["n_box"] == 3
    assert m["REC Acc@0.5"] == pytest.approx(1 / 3)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        ReferMetrics().update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2-D"):
        mask_iou(np.zeros((2, 2, 1)), np.zeros((2, 2, 1)))


GT = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
PRED = np.array([[0, 1, 1, 1], [2, 0, 0, 2]])


def test_confusion_matrix_skips_ignored_pixels():
    cm = confusion_matrix(PRED, GT, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    with pytest.raises(ValueError, match="predicted class 7"):
        confusion_matrix(np.array([[7]]), np.array([[1]]), 3)
    with pytest.raises(ValueError, match="ground-truth class 4"):
        confusion_matrix(np.array([[0]]), np.array([[4]]), 3)


def test_semantic_miou_hand_computed():
    acc = SemanticMetrics(3, ["others", "cat", "dog"], background=0)
    acc.update(PRED, GT)
    m = acc.compute()
    assert m["per_class_iou"] == pytest.approx({"others": 1 / 3, "cat": 2 / 3, "dog": 1 / 2})
    assert m["mIoU"] == pytest.approx(0.5)
    assert m["mIoU_fg"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["pixel_acc"] == pytest.approx(4 / 6)
    assert m["n_classes_present"] == 3


def test_semantic_absent_class_is_left_out_of_the_mean():
    acc = SemanticMetrics(4)
    acc.update(PRED, GT)
    m = acc.compute()
    assert m["per_class_iou"]["3"] is None
    assert m["mIoU"] == pytest.approx(0.5)


def test_semantic_all_classes_absent():
    acc = SemanticMetrics(3)
    acc.update(np.zeros((2, 2), int), np.full((2, 2), 255))
    m = acc.compute()
    assert m["mIoU"] is None and m["mIoU_fg"] is None
    assert m["pixel_acc"] is None and m["n_classes_present"] == 0


def _random_samples(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        gt = rng.random((12, 10)) < rng.choice([0.0, 0.3])
        pred = rng.random((12, 10)) < rng.choice([0.0, 0.2, 0.5])
        box = [] if not gt.any() else [1.0, 2.0, 7.0, 9.0]
        out.append((pred, gt, box))
    return out


def test_refer_states_merge_to_the_single_process_numbers():
    samples = _random_samples(40)
    whole = ReferMetrics()
    for pred, gt, box in samples:
        whole.update(pred, gt, box)
    parts = [ReferMetrics(), ReferMetrics()]
    for i, (pred, gt, box) in enumerate(samples[::-1]):
        parts[i % 2].update(pred, gt, box)
    # states travel between processes as JSON-able dicts
    states = [json.loads(json.dumps(p.state_dict())) for p in parts]
    merged = ReferMetrics.from_state_dict(states[1]).merge(ReferMetrics.from_state_dict(states[0]))
    assert merged.compute() == whole.compute()


def test_semantic_states_merge_exactly():
    rng = np.random.default_rng(1)
    pairs = [(rng.integers(0, 4, (6, 6)), rng.integers(0, 4, (6, 6))) for _ in range(10)]
    whole, a, b = SemanticMetrics(4), SemanticMetrics(4), SemanticMetrics(4)
    for k, (p, g) in enumerate(pairs):
        whole.update(p, g)
        (a if k % 3 else b).update(p, g)
    merged = SemanticMetrics.from_state_dict(json.loads(json.dumps(b.state_dict()))).merge(a)
    assert merged.compute() == whole.compute()


def test_exact_sum_is_order_independent():
    rng = random.Random(3)
    values = [rng.random() * 10 ** rng.randint(-8, 8) for _ in range(500)]
    forward = ExactSum(values)
    shuffled = values[:]
    rng.shuffle(shuffled)
    left, right = ExactSum(shuffled[:123]), ExactSum(shuffled[123:])
    right.merge(left)
    assert forward.value == right.value == math.fsum(values)
    with pytest.raises(ValueError):
        ExactSum([float("nan")])


def test_ignored_pixels_count_nowhere_and_merge_exactly():
    pred = _rect((4, 4), 0, 2, 0, 2)
    gt = _rect((4, 4), 0, 2, 1, 4)
    ignore = _rect((4, 4), 0, 4, 0, 1) | _rect((4, 4), 0, 4, 3, 4)  # columns 0 and 3
    assert intersection_union(pred, gt, ignore) == (2, 4)
    acc = ReferMetrics()
    assert acc.update(pred, gt, ignore=ignore).iou == pytest.approx(0.5)
    # a prediction only on ignored pixels is an empty prediction
    assert acc.update(_rect((4, 4), 0, 4, 0, 1), np.zeros((4, 4), bool), ignore=ignore).pred_empty
    with pytest.raises(ValueError, match="ignore mask shape"):
        acc.update(pred, gt, ignore=np.zeros((2, 2), bool))
    cm = confusion_matrix(PRED, GT, 3, ignore=np.array([[True, False, False, False], [True] * 4]))
    assert cm.tolist() == [[0, 1, 0], [0, 2, 0], [0, 0, 0]]
    rng = np.random.default_rng(2)
    triples = [
        (rng.integers(0, 3, (5, 5)), rng.integers(0, 3, (5, 5)), rng.random((5, 5)) < 0.3) for _ in range(8)
    ]
    whole, a, b = SemanticMetrics(3), SemanticMetrics(3), SemanticMetrics(3)
    for k, (p, g, i) in enumerate(triples):
        whole.update(p, g, i)
        (a if k % 2 else b).update(p, g, i)
    assert whole.confusion.sum() == sum(int((~i).sum()) for _, _, i in triples)
    assert a.merge(b).compute() == whole.compute()
