"""The data of a run: checked before a model is loaded; the settings (text4seg.json) it implies."""

from __future__ import annotations

import warnings

import pytest

from text4seg.protocol.asking import Asking
from text4seg.train import config_from_dict
from text4seg.train.data import DataError, load_datasets, trained_asking


def _config(path="", **data):
    return config_from_dict({"data": {"path": str(path), **data}})


def test_asking_comes_from_the_records_without_a_saved_one(records, tmp_path):
    # the records' 8x8 grid is read from their answers; an empty data folder has no text4seg.json
    assert trained_asking(_config(tmp_path), records, from_folder=True) == Asking(grid=(8, 8))
    assert trained_asking(_config(), records, from_folder=False) == Asking(grid=(8, 8))


def test_asking_saved_by_the_data_maker_wins_and_is_completed(records, tmp_path):
    Asking(grid=(16, 16), question="Where is {expression}?", upsample="bilinear").save(tmp_path)
    asking = trained_asking(_config(tmp_path), records, from_folder=True)
    assert asking == Asking(grid=(16, 16), question="Where is {expression}?", upsample="bilinear")
    Asking(target_label="target").save(tmp_path)  # fields it leaves unset come from the records
    assert trained_asking(_config(tmp_path), records, from_folder=True) == Asking(
        grid=(8, 8), target_label="target"
    )
    # data passed in memory is not the folder's: its text4seg.json does not apply
    assert trained_asking(_config(tmp_path), records, from_folder=False) == Asking(grid=(8, 8))


def test_a_bad_saved_asking_is_a_data_error(records, tmp_path):
    (tmp_path / "text4seg.json").write_text('{"grid": "big"}')
    with pytest.raises(DataError, match=r"text4seg\.json"):
        trained_asking(_config(tmp_path), records, from_folder=True)


def test_missing_column_and_empty_set_are_named(records, tmp_path):
    with pytest.raises(DataError, match="no column 'messages'"):
        load_datasets(_config(), [{"id": "a", "images": []}])
    with pytest.raises(DataError, match="no training data"):
        load_datasets(_config())
    with pytest.raises(DataError, match="does not exist"):
        load_datasets(_config(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="not a saved dataset"):
        load_datasets(_config(tmp_path))
    with pytest.raises(DataError, match="empty"):
        load_datasets(_config(), [])
    train, evaluation = load_datasets(_config(max_train_samples=2), records, records[:1])
    assert len(train) == 2 and len(evaluation) == 1


def test_a_missing_eval_split_is_said_not_skipped_silently(tmp_path):
    import datasets
    from support.records import built

    datasets.DatasetDict({"train": built("refcoco", images=2, size=48, grid=8)}).save_to_disk(str(tmp_path))
    with pytest.warns(UserWarning, match=r"no split 'val' \(it has train\): training without evaluation"):
        train, evaluation = load_datasets(_config(tmp_path))  # data.eval_split defaults to "val"
    assert len(train) > 0 and evaluation is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for no evaluation: nothing to say
        assert load_datasets(_config(tmp_path, eval_split=None))[1] is None


@pytest.mark.parametrize("relocate", ["move", "copy"])
def test_a_moved_or_copied_build_loads_its_images(relocate, tmp_path):
    import shutil

    from text4seg.data import make_synthetic
    from text4seg.data.build import BuildConfig, build
    from text4seg.train.collate import split_record

    synth = make_synthetic(tmp_path / "source", num_images=2, image_size=64, seed=0)
    build("refcoco", synth.refs, synth.images, tmp_path / "built", BuildConfig(grid=8, progress=False))
    shutil.rmtree(tmp_path / "source")  # the build (each image stored once, the default) needs nothing of it
    {"move": shutil.move, "copy": shutil.copytree}[relocate](tmp_path / "built", tmp_path / "moved")
    shutil.rmtree(tmp_path / "built", ignore_errors=True)
    train, _ = load_datasets(_config(tmp_path / "moved", train_split="train", eval_split=None))
    _, _, images = split_record(train[0])
    assert images[0].size == (64, 64) and str(tmp_path / "moved") in train[0]["images"][0]


def test_text4seg_train_runs_on_a_default_build_copied_elsewhere(tmp_path, capsys):
    import json
    import shutil

    from text4seg.cli import main
    from text4seg.data import make_synthetic

    synth = make_synthetic(tmp_path / "source", num_images=3, image_size=64, seed=0)
    build = ["build", "refcoco", "--ann", str(synth.refs), "--images", str(synth.images), "--grid", "8"]
    assert main([*build, "--out", str(tmp_path / "built"), "--quiet"]) == 0
    shutil.copytree(tmp_path / "built", tmp_path / "elsewhere" / "refcoco")
    shutil.rmtree(tmp_path / "built")
    shutil.rmtree(tmp_path / "source")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        f"model: {{name_or_path: 'tiny:qwen2_vl'}}\n"
        f"data: {{path: {tmp_path / 'elsewhere' / 'refcoco'}, eval_split: val}}\n"
        "loop: {batch_size: 2, max_steps: 2, progress: false}\n"
        f"output: {{dir: {tmp_path / 'run'}}}\n"
    )
    capsys.readouterr()
    assert main(["train", str(recipe)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["eval_loss"] is not None
