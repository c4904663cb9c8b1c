"""Oracle segmenters for the evaluation tests: they answer from the records' ground truth, so the scores
they should get are known (the records come from `support.records`).

A uniquely named module (not conftest) so that test files can import it beside other areas' conftests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import text4seg as t4s
from text4seg.protocol.records import query_of


@dataclass
class FakeResult:
    mask: np.ndarray
    label_map: np.ndarray
    grid: np.ndarray
    labels: list
    text: str = ""
    repairs: tuple = ()


class OracleSegmenter:
    """Answers from the ground truth: exactly (`grid=None`) or through a g×g grid (a coarse but honest answer)."""

    def __init__(self, dataset, grid: int | None = None, empty: bool = False):
        self.grid = grid
        self.empty = empty
        self.truth = {}
        for record in dataset:
            self.truth[self._key(record["images"][0].convert("RGB"), _query(record))] = record
        self.calls = 0

    @staticmethod
    def _key(image, query):
        return (image.tobytes(), tuple(query) if isinstance(query, list) else query)

    def segment(self, image, query):
        from text4seg.protocol.records import ground_truth

        self.calls += 1
        record = self.truth[self._key(image, query)]
        truth = ground_truth(record)
        label_map = np.zeros(truth.mask.shape, dtype=np.int32)
        for k, m in enumerate(truth.masks):
            label_map[m] = k + 1
        if self.empty:
            label_map[:] = 0
        grid = t4s.label_map_to_grid(label_map, self.grid or 16)
        if self.grid is not None:
            label_map = t4s.grid_to_mask(grid, truth.mask.shape, method="nearest")
            label_map = label_map.astype(np.int32)
        return FakeResult(label_map > 0, label_map, grid, list(record["labels"]))


def _query(record):
    return query_of(record)


class ClassListOracle:
    """Answers a class list (open-vocabulary semantic evaluation) from the ground truth of the image's
    semantic record: each pixel labelled with its class's place in the asked list; pixels the record
    ignores are answered `wrong_on_ignored` (a class index) to show they are not scored."""

    def __init__(self, dataset, wrong_on_ignored: int | None = None):
        from text4seg.protocol.images import read_record_image

        self.wrong = wrong_on_ignored
        self.truth = {}
        for record in dataset:
            if record["task"] == "semantic":
                self.truth[read_record_image(record["images"][0]).tobytes()] = record
        self.queries = []

    def segment(self, image, query):
        from text4seg.protocol.records import ground_truth

        self.queries.append(query)
        truth = ground_truth(self.truth[image.tobytes()])
        label_map = np.zeros(truth.mask.shape, dtype=np.int32)
        for name, m in zip(truth.label_names, truth.masks, strict=True):
            label_map[m] = query.index(name) + 1 if name in query else 0
        if self.wrong is not None and truth.ignore is not None:
            label_map[truth.ignore] = self.wrong
        grid = t4s.label_map_to_grid(label_map, 8)
        return FakeResult(label_map > 0, label_map, grid, ["others", *query])
