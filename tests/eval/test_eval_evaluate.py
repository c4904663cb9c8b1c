"""The evaluation loop on records in the RECORDS.md schema, with oracle segmenters whose scores are known."""

from __future__ import annotations

import json
import re

import datasets
import numpy as np
import pytest
from eval_records import OracleSegmenter
from support.records import evaluation_split

from text4seg.eval.evaluate import EvalDataError, evaluate, load_split
from text4seg.eval.metrics import mask_iou


def test_perfect_answers_score_one_everywhere(records):
    report = evaluate(OracleSegmenter(records), records, progress=False)
    refer = report.metrics["refer"]["grefcoco"]["coarse"]
    refer_records = [s for s, t in zip(records["source"], records["task"], strict=True) if t == "refer"]
    n_no_target = sum(not s["ann_ids"] for s in refer_records)  # gRefCOCO no-target expressions
    assert n_no_target and refer["n"] == len(refer_records) and refer["n_no_target"] == n_no_target
    for key in ("cIoU", "gIoU", "prec@0.5", "prec@0.9", "N-acc", "T-acc", "REC Acc@0.5"):
        assert refer[key] == 1.0, key
    semantic = report.metrics["semantic"]["coarse"]
    assert semantic["mIoU"] == 1.0 and semantic["pixel_acc"] == 1.0
    assert "refined" not in report.metrics["refer"]["grefcoco"]
    assert report.info["n_samples"] == len(records) and report.info["repaired_outputs"] == 0


def test_empty_answers(records):
    report = evaluate(OracleSegmenter(records, empty=True), records, progress=False)
    refer = report.metrics["refer"]["grefcoco"]["coarse"]
    n_none, n = refer["n_no_target"], refer["n"]
    assert refer["gIoU"] == pytest.approx(n_none / n)
    assert refer["cIoU"] == 0.0 and refer["T-acc"] == 0.0 and refer["N-acc"] == 1.0
    assert refer["REC Acc@0.5"] == 0.0 and refer["n_box"] == n - n_none
    per_class = report.metrics["semantic"]["coarse"]["per_class_iou"]
    assert len(per_class) > 1 and all(per_class[c] in (0.0, None) for c in per_class if c != "others")


def test_coarse_answers_match_per_sample_ious_and_files_are_written(records, tmp_path):
    oracle = OracleSegmenter(records, grid=6)
    report = evaluate(oracle, records, out_dir=tmp_path, overlays=2, batch_size=4, progress=False)
    expected = []
    for record in records:
        if record["task"] != "refer":
            continue
        pred = oracle.segment(record["images"][0].convert("RGB"), record["expression"])
        from text4seg.protocol.records import ground_truth

        expected.append(mask_iou(pred.mask, ground_truth(record).mask))
    refer = report.metrics["refer"]["grefcoco"]["coarse"]
    assert refer["gIoU"] == pytest.approx(np.mean(expected))
    assert 0.0 < refer["gIoU"] < 1.0
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["metrics"] == json.loads(json.dumps(report.metrics))
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == list(range(len(records)))
    assert sorted(p.name for p in (tmp_path / "overlays").iterdir()) == ["00000.png", "00001.png"]
    assert "| grefcoco | gIoU |" in report.summary()


def test_refinement_is_scored_beside_the_coarse_masks(records):
    from text4seg.infer.refine import SamRefiner, tiny_sam

    refiner = SamRefiner(*tiny_sam(), device="cpu", iterations=1, min_iou=1.01)  # guard always keeps coarse
    report = evaluate(OracleSegmenter(records, grid=8), records, refiner=refiner, limit=8, progress=False)
    refer = report.metrics["refer"]["grefcoco"]
    assert refer["refined"] == refer["coarse"]
    assert report.info["n_samples"] == 8 and report.info["refined"]
    # the 8 first records are about 2 images: SAM encoded each once
    n_images = len({(r["source"]["image_id"]) for r in records.select(range(8))})
    assert refiner.encoder_calls == n_images
    assert all(
        s["refine"]["kept_coarse"]
        for s in report.samples
        if s["task"] == "refer" and not s["coarse"]["pred_empty"]
    )


def test_load_split_and_bad_records(tmp_path):
    data = evaluation_split(1, semantic=False)
    datasets.DatasetDict({"val": data}).save_to_disk(str(tmp_path / "ds"))
    assert len(load_split(tmp_path / "ds", "val")) == len(data)
    with pytest.raises(KeyError, match="train"):
        load_split(tmp_path / "ds", "train")
    with pytest.raises(FileNotFoundError, match="text4seg build"):
        load_split(tmp_path / "missing", "val")
    broken = data.map(lambda r: {"masks": ["not an rle"]}, load_from_cache_file=False)
    with pytest.raises(EvalDataError, match=re.escape(data[0]["id"])):
        evaluate(OracleSegmenter(data), broken, progress=False)


def test_records_built_with_image_paths_score_like_embedded_images(records, tmp_path):
    paths = []
    for i, record in enumerate(records):
        path = tmp_path / f"{i}.png"
        record["images"][0].convert("RGB").save(path)
        paths.append([str(path)])
    by_path = records.remove_columns("images").add_column("images", paths)
    embedded = evaluate(OracleSegmenter(records, grid=6), records, progress=False)
    from_paths = evaluate(OracleSegmenter(records, grid=6), by_path, progress=False)
    assert from_paths.metrics == embedded.metrics


def test_unreadable_image_path_names_the_record(records, tmp_path):
    broken = (
        records.select([0]).remove_columns("images").add_column("images", [[str(tmp_path / "missing.png")]])
    )
    with pytest.raises(EvalDataError, match="cannot read image"):
        evaluate(OracleSegmenter(records), broken, progress=False)


class _AsksLikeTheSegmenter(OracleSegmenter):
    """The oracle, after the checks `Segmenter.segment_batch` makes on each query (`make_query`)."""

    def segment_batch(self, pairs, batch_size=8):
        from text4seg.infer.prompts import make_query

        for index, (_, query) in enumerate(pairs):
            try:
                make_query(query)
            except ValueError as err:
                raise ValueError(f"pair {index}: {err}") from err
        return [self.segment(image, query) for image, query in pairs]


def test_a_query_the_segmenter_refuses_names_its_records():
    data = evaluation_split(1, semantic=False)
    long = data.map(lambda r, i: {"expression": "x" * 600 if i == 1 else r["expression"]}, with_indices=True)
    first, second = (re.escape(i) for i in data["id"][:2])
    with pytest.raises(
        EvalDataError, match=rf"records {first}, {second}.*pair 1: expression is 600 characters"
    ):
        evaluate(_AsksLikeTheSegmenter(long), long, batch_size=2, progress=False)


def test_conversation_records_are_skipped_and_counted():
    data = evaluation_split(1, semantic=False)
    chat = data.select([0, 1]).map(lambda r: {"task": "conversation", "masks": [], "labels": []})
    mixed = datasets.concatenate_datasets([chat, data])
    report = evaluate(OracleSegmenter(data), mixed, progress=False)
    assert report.info["skipped"] == {"conversation": 2, "other_task": 0}
    assert report.info["n_samples"] == len(data) == len(report.samples)
    assert report.metrics["refer"]["grefcoco"]["coarse"]["gIoU"] == 1.0


def test_a_dataset_storing_image_paths_is_read_wherever_its_folder_moved(tmp_path):
    data = evaluation_split(1, semantic=False)
    (tmp_path / "ds" / "images").mkdir(parents=True)
    paths = []
    for i, record in enumerate(data):
        record["images"][0].convert("RGB").save(tmp_path / "ds" / "images" / f"{i}.png")
        paths.append([f"images/{i}.png"])
    by_path = data.remove_columns("images").add_column("images", paths)
    datasets.DatasetDict({"val": by_path}).save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "ds").rename(tmp_path / "moved")
    report = evaluate(OracleSegmenter(data), tmp_path / "moved", progress=False)
    assert report.metrics["refer"]["grefcoco"]["coarse"]["gIoU"] == 1.0


class _WrongWhereIgnored(OracleSegmenter):
    """The oracle, except that it answers the opposite of the truth on the records' ignored pixels."""

    def __init__(self, dataset, ignore):
        super().__init__(dataset)
        self.ignore = ignore

    def segment(self, image, query):
        result = super().segment(image, query)
        label_map = np.where(self.ignore, (result.label_map == 0).astype(np.int32), result.label_map)
        return type(result)(label_map > 0, label_map, result.grid, result.labels)


def test_ignored_pixels_are_left_out_of_every_metric(records):
    from text4seg.protocol.records import encode_counts

    size = records[0]["height"], records[0]["width"]
    ignore = np.zeros(size, dtype=bool)
    ignore[:, : size[1] // 3] = True
    with_ignore = records.remove_columns("ignore").add_column(
        "ignore", [encode_counts(ignore)] * len(records)
    )
    wrong = _WrongWhereIgnored(records, ignore)
    report = evaluate(wrong, with_ignore, progress=False)
    assert report.metrics["refer"]["grefcoco"]["coarse"]["cIoU"] == 1.0
    assert report.metrics["semantic"]["coarse"]["mIoU"] == 1.0
    unmasked = evaluate(wrong, records, progress=False)
    assert unmasked.metrics["refer"]["grefcoco"]["coarse"]["cIoU"] < 1.0
    assert unmasked.metrics["semantic"]["coarse"]["mIoU"] < 1.0


def test_open_vocabulary_semantic_evaluation_asks_every_class_and_leaves_ignored_pixels_out(labelmap_data):
    from eval_records import ClassListOracle

    data = load_split(labelmap_data, "val")
    oracle = ClassListOracle(data, wrong_on_ignored=1)
    report = evaluate(oracle, labelmap_data, task="semantic", progress=False)
    assert report.info["classes"] == ["floor", "sky", "wall"]
    assert all(q == ["floor", "sky", "wall"] for q in oracle.queries) and len(oracle.queries) == 3
    coarse = report.metrics["semantic"]["coarse"]
    assert coarse["mIoU"] == 1.0 and coarse["mIoU_fg"] == 1.0 and coarse["pixel_acc"] == 1.0
    table = coarse["per_class"]
    assert set(table) == {"others", "floor", "sky", "wall"}
    assert all(table[c]["iou"] == 1.0 and table[c]["acc"] == 1.0 for c in ("floor", "sky", "wall"))
    # the ignored border (2 of 24 rows) is counted nowhere
    assert sum(row["gt_pixels"] for row in table.values()) == 3 * 22 * 32
    assert "| wall |" in report.summary()
    # a class file naming another list: the records' classes it lacks are an error naming the record
    with pytest.raises(EvalDataError, match="class 'wall' is not in the class list"):
        evaluate(ClassListOracle(data), data, task="semantic", classes=["floor", "sky"], progress=False)


class _HalfSky:
    """Answers every image with background on its left half and "sky" on its right half (columns >= 16)."""

    def segment(self, image, query):
        from eval_records import FakeResult

        label_map = np.zeros((image.height, image.width), dtype=np.int32)
        label_map[:, 16:] = query.index("sky") + 1
        return FakeResult(label_map > 0, label_map, label_map[::3, ::4], ["others", *query])


def test_semantic_pixel_accuracy_and_foreground_miou_are_the_hand_counted_ones(labelmap_data):
    """The 3 maps (22 scored rows × 32 columns): a = wall | sky from column 16, b = sky | floor from
    column 17, c = floor. Half-sky answers: sky TP = 22·(16 + 1), union 22·(33 + 48 − 17) -> 17/64; wall,
    floor and the background (predicted, never true) 0. mIoU = 17/64 / 4, without the background
    17/64 / 3; pixel accuracy 17/96."""
    report = evaluate(_HalfSky(), labelmap_data, task="semantic", progress=False)
    coarse = report.metrics["semantic"]["coarse"]
    assert coarse["per_class_iou"] == {"others": 0.0, "floor": 0.0, "sky": 17 / 64, "wall": 0.0}
    assert coarse["mIoU"] == pytest.approx(17 / 64 / 4)
    assert coarse["mIoU_fg"] == pytest.approx(17 / 64 / 3)
    assert coarse["pixel_acc"] == pytest.approx(17 / 96)
    assert coarse["per_class"]["sky"]["acc"] == pytest.approx(17 / 33)


def test_semantic_task_skips_the_other_records(records):
    from eval_records import ClassListOracle

    report = evaluate(ClassListOracle(records), records, task="semantic", progress=False)
    n_semantic = sum(t == "semantic" for t in records["task"])
    assert report.info["n_samples"] == n_semantic
    assert report.info["skipped"]["other_task"] == len(records) - n_semantic
    assert "refer" not in report.metrics or not report.metrics["refer"]
    assert report.metrics["semantic"]["coarse"]["mIoU"] == 1.0


class _UpsamplesWithTheImage(OracleSegmenter):
    """The coarse oracle, answering as a `Segmenter(upsample="guided")` does: its masks upsampled with the
    image as guide, and `upsample` saying so."""

    def segment(self, image, query):
        import text4seg as t4s

        result = super().segment(image, query)
        label_map = t4s.grid_to_mask(result.grid, result.mask.shape, "guided", image=image).astype(np.int32)
        guided = type(result)(label_map > 0, label_map, result.grid, result.labels)
        guided.upsample = "guided"
        return guided


def test_coarse_guided_and_refined_come_from_one_grid(records):
    import text4seg as t4s
    from text4seg.infer.refine import SamRefiner, tiny_sam
    from text4seg.protocol.records import ground_truth

    refiner = SamRefiner(*tiny_sam(), device="cpu", iterations=1, min_iou=1.01)
    data = records.filter(lambda r: r["task"] == "refer").select(range(6))
    report = evaluate(_UpsamplesWithTheImage(data, grid=6), data, refiner=refiner, progress=False)
    assert set(report.metrics["refer"]["grefcoco"]) == {"coarse", "guided", "refined"}
    for record, line in zip(data, report.samples, strict=True):
        image = record["images"][0].convert("RGB")
        truth = ground_truth(record)
        grid = t4s.label_map_to_grid(truth.mask.astype(np.int32), 6)  # the oracle's answer
        for variant, method in (("coarse", "bilinear"), ("guided", "guided")):
            mask = t4s.grid_to_mask(grid, truth.mask.shape, method, image=image) != 0
            assert line[variant]["iou"] == pytest.approx(mask_iou(mask, truth.mask)), (variant, line["id"])
    # a segmenter upsampling otherwise (here nearest): its own map is coarse; guided is made from its grid
    plain = evaluate(OracleSegmenter(data, grid=6), data, progress=False)
    assert plain.metrics["refer"]["grefcoco"]["guided"] == report.metrics["refer"]["grefcoco"]["guided"]


class _AsksWithAReferTemplate(OracleSegmenter):
    """The oracle, after formatting its question as a model trained on referring questions only would."""

    def segment(self, image, query):
        from text4seg.infer.prompts import make_query

        make_query(query, question="Where is {expression}?")
        return super().segment(image, query)


def test_a_question_template_of_the_other_kind_is_one_error(records):
    semantic = records.filter(lambda r: r["task"] == "semantic")
    with pytest.raises(EvalDataError, match=r"names \{expression\}, which a class list does not fill"):
        evaluate(_AsksWithAReferTemplate(semantic), semantic, progress=False)
