"""Choosing the background bias on validation records: the best-scoring bias is kept and set."""

from __future__ import annotations

import pytest
from eval_records import OracleSegmenter
from support.records import evaluation_split

from text4seg.eval.calibrate import calibrate_background_bias


class BiasedOracle(OracleSegmenter):
    """The ground truth when `background_bias` is `good`, an empty answer otherwise."""

    def __init__(self, dataset, good: float):
        super().__init__(dataset)
        self.good, self.background_bias = good, 0.0

    def segment(self, image, query):
        self.empty = self.background_bias != self.good
        return super().segment(image, query)


def test_the_best_bias_is_chosen_and_set():
    records = evaluation_split(semantic=False)
    oracle = BiasedOracle(records, good=2.0)
    calibration = calibrate_background_bias(oracle, records, (0.0, 1.0, 2.0, 3.0))
    assert calibration.bias == 2.0 and oracle.background_bias == 2.0
    assert calibration.scores[2.0] == pytest.approx(1.0)
    assert all(calibration.scores[b] < 1.0 for b in (0.0, 1.0, 3.0))
    assert calibration.metric == "gIoU"


def test_ties_keep_the_smallest_bias_and_empty_choices_are_refused():
    records = evaluation_split(semantic=False)
    oracle = OracleSegmenter(records)
    oracle.background_bias = 0.0
    assert calibrate_background_bias(oracle, records, (3.0, 0.0, 1.0)).bias == 0.0
    with pytest.raises(ValueError, match="no biases"):
        calibrate_background_bias(oracle, records, ())


def test_the_default_search_walks_up_and_stops_past_the_best():
    records = evaluation_split(semantic=False)
    oracle = BiasedOracle(records, good=3.0)
    calibration = calibrate_background_bias(oracle, records)
    assert calibration.bias == 3.0 and list(calibration.scores) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
