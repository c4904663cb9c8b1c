"""Several datasets in one run (`data.sources`): mixing by weight, per-source eval loss, files and Hub ids,
errors before any model loads, agreed settings, and streaming that resumes where it stopped."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from support.records import record_list

from text4seg.models.tiny import build_tiny
from text4seg.protocol.asking import Asking
from text4seg.train import config_from_dict, train
from text4seg.train.data import DataError, load_data, load_datasets


def _folder(tmp_path, name, seed, n=6, grid=8):
    """A folder of n built records (`support.records`): train split of n-2 records, val split of 2."""
    from datasets import Dataset, DatasetDict

    from text4seg.protocol.records import record_features

    recs = record_list(n, seed=seed, grid=grid)
    splits = {"train": recs[:-2], "val": recs[-2:]}
    folder = tmp_path / name
    DatasetDict(
        {k: Dataset.from_list(v, features=record_features()) for k, v in splits.items()}
    ).save_to_disk(folder)
    return str(folder)


def _chat(prefix, n):
    """Text-only records (a general conversation source), ids `<prefix>/<i>`."""
    return [
        {
            "id": f"{prefix}/{i}",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": f"question {i}"}]},
                {"role": "assistant", "content": [{"type": "text", "text": f"answer {i}"}]},
            ],
        }
        for i in range(n)
    ]


def _config(tmp_path, data, **loop):
    return config_from_dict(
        {
            "model": {"name_or_path": "tiny:qwen2_vl"},
            "optim": {"lr": 1e-3, "scheduler": "constant"},
            "finetune": {"lora_dropout": 0.0},
            "loop": {"batch_size": 1, "max_steps": 2, "progress": False, **loop},
            "data": {"shuffle": False, **data},
            "output": {"dir": str(tmp_path / "run")},
        }
    )


def _metrics(result):
    return [json.loads(line) for line in result.metrics_path.read_text().splitlines()]


def test_two_folder_sources_train_and_log_eval_loss_per_source(tmp_path):
    sources = [
        {"path": _folder(tmp_path, "refcoco", 1), "weight": 3},
        {"path": _folder(tmp_path, "grefcoco", 2), "weight": 1},
    ]
    model, processor = build_tiny("qwen2_vl")
    result = train(_config(tmp_path, {"sources": sources}), model=model, processor=processor)
    evals = [m for m in _metrics(result) if "eval_loss" in m]
    assert evals and set(evals[-1]) == {"step", "eval_loss", "eval_loss/refcoco", "eval_loss/grefcoco"}
    # the overall loss is the mean over both sources' eval batches (two each)
    last = evals[-1]
    assert last["eval_loss"] == pytest.approx((last["eval_loss/refcoco"] + last["eval_loss/grefcoco"]) / 2)
    assert set(result.source_eval_losses) == {"refcoco", "grefcoco"}
    assert Asking.load(result.final_dir) == Asking(grid=(8, 8))


def _text_sources(tmp_path, counts):
    from datasets import Dataset

    paths = []
    for name, n in counts.items():
        Dataset.from_list(_chat(name, n)).save_to_disk(tmp_path / name)
        paths.append(str(tmp_path / name))
    return paths


def test_interleave_proportions_follow_the_weights_and_the_seed(tmp_path):
    a, b = _text_sources(tmp_path, {"a": 400, "b": 400})
    data = {
        "sources": [{"path": a, "weight": 3}, {"path": b, "weight": 1}],
        "stopping_strategy": "first_exhausted",
    }
    mixed, evals = load_datasets(_config(tmp_path, data))
    first = [r.split("/")[0] for r in mixed[:200]["id"]]
    share = Counter(first)["a"] / len(first)
    assert 0.65 < share < 0.85, share  # 3:1 -> 0.75
    assert evals is None  # saved without splits: no eval records
    again, _ = load_datasets(_config(tmp_path, data))
    other, _ = load_datasets(_config(tmp_path, data, seed=1))
    assert again[:50]["id"] == mixed[:50]["id"] != other[:50]["id"]
    joined, _ = load_datasets(_config(tmp_path, {**data, "mix": "concatenate"}))
    assert joined["id"] == [f"a/{i}" for i in range(400)] + [f"b/{i}" for i in range(400)]


def test_parquet_and_json_sources_with_an_eval_file(tmp_path):
    from datasets import Dataset

    Dataset.from_list(_chat("p", 5)).to_parquet(tmp_path / "p.parquet")
    Dataset.from_list(_chat("j", 5)).to_json(tmp_path / "j.jsonl")
    Dataset.from_list(_chat("je", 2)).to_json(tmp_path / "j_eval.jsonl")
    data = {
        "sources": [
            {"path": str(tmp_path / "p.parquet")},
            {"path": str(tmp_path / "j.jsonl"), "name": "chat", "eval_path": str(tmp_path / "j_eval.jsonl")},
        ],
        "mix": "concatenate",
    }
    mixed, evals = load_datasets(_config(tmp_path, data))
    assert mixed["id"] == [f"p/{i}" for i in range(5)] + [f"j/{i}" for i in range(5)]
    assert list(evals) == ["chat"] and evals["chat"]["id"] == ["je/0", "je/1"]
    streamed, evals = load_datasets(_config(tmp_path, {**data, "streaming": True}, max_steps=3))
    assert [r["id"] for r in streamed] == mixed["id"] and [r["id"] for r in evals["chat"]] == ["je/0", "je/1"]
    with pytest.raises(DataError, match=r"data\.sources\[0\] \(\w+\): cannot load parquet files"):
        load_datasets(_config(tmp_path, {"sources": [{"path": str(tmp_path / "none*.parquet")}]}))


def test_a_source_missing_a_column_is_named(tmp_path):
    from datasets import Dataset

    Dataset.from_list([{"id": "x", "text": "hello"}]).to_json(tmp_path / "plain.jsonl")
    data = {"sources": [{"path": _folder(tmp_path, "ok", 1)}, {"path": str(tmp_path / "plain.jsonl")}]}
    with pytest.raises(DataError, match=r"data\.sources\[1\] \(plain\).*no column 'messages'"):
        load_datasets(_config(tmp_path, data))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("./nowhere/refcoco", "does not exist"),
        (
            "someone/no-such-dataset",
            r"'someone/no-such-dataset' \(not a local path\) from the Hub \(HF_HUB_OFFLINE=1",
        ),
    ],
)
def test_unknown_path_and_offline_hub_id_fail_in_one_line_before_any_model(
    path, message, tmp_path, monkeypatch
):
    import datasets

    import text4seg.train.trainer as trainer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(trainer, "build_model", lambda *a, **k: pytest.fail("a model was loaded"))
    data = {"sources": [{"path": _folder(tmp_path, "ok", 1)}, {"path": path}]}
    with pytest.raises(DataError, match=message) as caught:
        train(_config(tmp_path, data))
    assert "\n" not in str(caught.value) and "data.sources[1]" in str(caught.value)


def test_settings_are_those_the_sources_agree_on(tmp_path):
    a, b = _folder(tmp_path, "a", 1, grid=8), _folder(tmp_path, "b", 2, grid=16)
    Asking(upsample="bilinear").save(a)
    Asking(upsample="bilinear").save(b)
    with pytest.warns(UserWarning, match="disagree on grid"):
        _, _, asking = load_data(_config(tmp_path, {"sources": [{"path": a}, {"path": b}]}))
    assert asking == Asking(upsample="bilinear")  # the grids differ: left unset
    chat = _text_sources(tmp_path, {"chat": 4})[0]
    _, _, asking = load_data(_config(tmp_path, {"sources": [{"path": a}, {"path": chat}]}))
    assert asking.grid == (8, 8)  # a source without descriptors has no say on the grid


def test_streaming_needs_max_steps_and_streams_one_folder_of_data_path(tmp_path):
    from text4seg.train.config import ConfigError

    with pytest.raises(ConfigError, match="loop.max_steps"):
        _config(tmp_path, {"path": "x", "streaming": True}, max_steps=None)
    folder = _folder(tmp_path, "ref", 1)
    streamed, evals = load_datasets(_config(tmp_path, {"path": folder, "streaming": True, "shards": 3}))
    assert [r["id"] for r in streamed] == [r["id"] for r in record_list(4, seed=1)]
    assert list(evals) == ["ref"] and len(evals["ref"]) == 2


def _seen_ids(monkeypatch):
    """The record ids of every batch the loop trains on."""
    from text4seg.train.loop import Loop

    seen, original = [], Loop._micro_step

    def spy(self, batch, state):
        seen.extend(batch.get("ids", []) + batch.get("skipped", []))
        return original(self, batch, state)

    monkeypatch.setattr(Loop, "_micro_step", spy)
    return seen


def _stream_config(tmp_path, data, **loop):
    return _config(tmp_path, {"streaming": True, "shards": 2, **data}, **loop)


@pytest.mark.parametrize(
    ("mix", "cut", "steps"),
    [("concatenate", 3, 6), ("interleave", 11, 12)],  # 11: after the 9-record stream ran out once
)
def test_streaming_resume_continues_with_the_next_records(mix, cut, steps, tmp_path, monkeypatch):
    chat = _text_sources(tmp_path, {"chat": 5})[0]
    data = {"sources": [{"path": _folder(tmp_path, "ref", 1)}, {"path": chat}], "mix": mix}
    seen = _seen_ids(monkeypatch)
    model, processor = build_tiny("qwen2_vl")
    whole = train(_stream_config(tmp_path / "whole", data, max_steps=steps), model=model, processor=processor)
    uninterrupted = list(seen)
    assert whole.steps == steps and len(uninterrupted) == steps
    seen.clear()
    config = _stream_config(tmp_path / "cut", data, max_steps=steps, save_every=cut)
    model, processor = build_tiny("qwen2_vl")
    train(config, model=model, processor=processor, callbacks=[lambda record: record["step"] >= cut])
    first = list(seen)
    seen.clear()
    model, processor = build_tiny("qwen2_vl")
    resumed = train(config, model=model, processor=processor)
    assert resumed.resumed_from is not None and resumed.resumed_from.name == f"checkpoint-{cut}"
    assert len(first) == cut and first + seen == uninterrupted, (first, seen, uninterrupted)


@pytest.mark.parametrize("streaming", [False, True])
def test_a_moved_build_storing_image_paths_mixes_with_embedded_images(streaming, tmp_path):
    import shutil

    from text4seg.data import make_synthetic
    from text4seg.data.build import BuildConfig, build
    from text4seg.train.collate import split_record

    synth = make_synthetic(tmp_path / "source", num_images=2, image_size=64, seed=0)
    build("refcoco", synth.refs, synth.images, tmp_path / "built", BuildConfig(grid=8, progress=False))
    shutil.move(
        tmp_path / "built", tmp_path / "moved"
    )  # relative image paths: resolved against the new place
    data = {
        "sources": [{"path": str(tmp_path / "moved")}, {"path": _folder(tmp_path, "embedded", 1)}],
        "mix": "concatenate",
        "streaming": streaming,
    }
    mixed, evals = load_datasets(_config(tmp_path, data))
    rows = list(mixed) if streaming else [mixed[i] for i in range(len(mixed))]
    sizes = {split_record(r)[2][0].size for r in rows}
    assert sizes == {(64, 64), (32, 32)} and len(rows) > 4
    assert "embedded" in evals  # its val split, evaluated on its own


def test_the_cli_names_a_bad_source_in_one_error_line(tmp_path, monkeypatch, capsys):
    import text4seg.train.trainer as trainer
    from text4seg.train.cli import main as train_main

    monkeypatch.setattr(trainer, "build_model", lambda *a, **k: pytest.fail("a model was loaded"))
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(
        f"data:\n  sources:\n    - {{path: {_folder(tmp_path, 'ok', 1)}}}\n    - {{path: {tmp_path / 'gone'}}}\n"
        f"output:\n  dir: {tmp_path / 'run'}\n"
    )
    capsys.readouterr()  # the progress bars of saving the dataset
    assert train_main([str(recipe), "loop.max_steps=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: data.sources[1] (gone)"), err
    assert "does not exist" in err


def _two_processes(tmp_path, config, ids: str, stop_at: int = 0) -> list[list[str]]:
    """Run `_launch_stream.py` under `accelerate launch` in 2 CPU processes (gloo); the ids each trained on."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launcher += ["--main_process_port", str(port)]
    script = Path(__file__).with_name("_launch_stream.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", ACCELERATE_USE_CPU="true")
    run = subprocess.run(
        [*launcher, str(script), str(tmp_path / "config.json"), str(tmp_path / ids), str(stop_at)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return [json.loads((tmp_path / f"{ids}.{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.slow  # three 2-process launches: about a minute on 2 cores
def test_two_processes_split_a_stream_without_overlap_and_resume_where_it_stopped(tmp_path):
    from text4seg.data import make_synthetic
    from text4seg.data.build import BuildConfig, build

    synth = make_synthetic(tmp_path / "source", num_images=10, image_size=48, seed=0)
    build("refcoco", synth.refs, synth.images, tmp_path / "built", BuildConfig(grid=8, progress=False))
    data = {"path": str(tmp_path / "built"), "eval_split": None}  # a default build: images stored once
    steps, cut = 4, 2
    stream = [r["id"] for r in load_datasets(_stream_config(tmp_path, data, max_steps=steps))[0]]
    assert len(stream) > 2 * steps  # the run does not reach the stream's end
    whole = _two_processes(tmp_path, _stream_config(tmp_path / "whole", data, max_steps=steps), "whole")
    assert all(len(ids) == steps for ids in whole) and not set(whole[0]) & set(whole[1])
    assert sorted(whole[0] + whole[1]) == sorted(stream[: 2 * steps])  # together: the stream's first records

    config = _stream_config(tmp_path / "cut", data, max_steps=steps, save_every=cut)
    first = _two_processes(tmp_path, config, "first", stop_at=cut)
    rest = _two_processes(tmp_path, config, "rest")
    assert [len(ids) for ids in first] == [cut, cut]
    assert [a + b for a, b in zip(first, rest, strict=True)] == whole, (first, rest, whole)
