"""Model sources checked before loading (folders, the local HF cache, the Hub) and text4seg.json beside them."""

from __future__ import annotations

import json
import socket
import time

import pytest
import torch
from support.hub import cached_repo

from text4seg.infer import sources
from text4seg.infer.sources import ModelSourceError, asking_beside, check_source, saved_settings


@pytest.fixture()
def hf_home(tmp_path, monkeypatch):
    """An empty HF_HOME, offline; `cached_repo` fills it by hand in the Hub cache layout."""
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_paths_fail_at_once(tmp_path, hf_home):
    check_source(tmp_path)  # a folder is fine
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(ModelSourceError, match="is a file"):
        check_source(tmp_path / "weights.bin")
    with pytest.raises(ModelSourceError, match=r"runs/x/final: no such folder \(and not a Hugging Face"):
        check_source("runs/x/final")
    with pytest.raises(ModelSourceError, match="adapter ./ckpt: no such folder"):
        check_source("./ckpt", "adapter")


def test_hub_ids_need_the_cache_when_offline(hf_home):
    with pytest.raises(ModelSourceError, match="not in the local Hugging Face cache .HF_HUB_OFFLINE is set"):
        check_source("org/not-cached")
    cached_repo(hf_home, "org/cached", {"config.json": "{}"})
    check_source("org/cached")
    with pytest.raises(ModelSourceError, match="org/cached: no such folder"):  # no adapter_config.json
        check_source("org/cached", "adapter", probe="adapter_config.json")


def test_an_unreachable_hub_fails_in_seconds(hf_home, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    sources._reachable.cache_clear()
    started = time.perf_counter()
    with pytest.raises(ModelSourceError, match="cannot be reached"):
        check_source("org/name")
    assert time.perf_counter() - started < sources.HUB_PROBE_TIMEOUT_S + 1
    assert sources.hub_file("org/name", "text4seg.json") is None  # settings: none, without retries


def test_settings_from_a_cached_hub_repository(hf_home):
    cached_repo(hf_home, "org/model", {"config.json": "{}", "text4seg.json": '{"grid": [24, 24]}'})
    assert asking_beside("org/model").grid == (24, 24)
    assert saved_settings("org/model") == {"grid": (24, 24)}
    cached_repo(hf_home, "org/plain", {"config.json": "{}"})
    assert saved_settings("org/plain") == {}
    cached_repo(hf_home, "org/bad", {"text4seg.json": '{"grid": 10000}'})
    with pytest.raises(ValueError, match=r"models--org--bad.*text4seg.json: grid must be"):
        saved_settings("org/bad")


def _folder(path, settings=None, adapter_of=None):
    path.mkdir(parents=True)
    if settings is not None:
        (path / "text4seg.json").write_text(json.dumps(settings))
    if adapter_of is not None:
        (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(adapter_of)}))
    return path


def test_the_adapters_settings_win_over_the_bases(tmp_path, hf_home):
    base = _folder(tmp_path / "base", {"grid": [5, 5], "target_label": "base", "answer_sentences": "none"})
    adapter = _folder(tmp_path / "final", {"target_label": "target"}, adapter_of=base)
    expected = {"grid": (5, 5), "target_label": "target", "answer_sentences": "none"}
    assert saved_settings(base, adapter) == expected
    assert saved_settings(adapter) == expected  # an adapter folder given as the model: its base first
    checkpoint = _folder(tmp_path / "checkpoints" / "checkpoint-40", {"grid": [8, 8]}, adapter_of=base)
    (checkpoint / "optimizer.bin").write_bytes(b"\0")
    assert saved_settings(checkpoint)["grid"] == (8, 8)
    bare = _folder(tmp_path / "bare", adapter_of=base)
    assert saved_settings(bare)["target_label"] == "base"
    cached_repo(hf_home, "org/base", {"text4seg.json": '{"grid": [32, 32], "upsample": "nearest"}'})
    assert saved_settings("org/base", adapter) == {
        "grid": (32, 32),
        "upsample": "nearest",
        "target_label": "target",
    }


def test_a_cached_model_loads_offline_when_the_hub_is_unreachable(hf_home, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    sources._reachable.cache_clear()
    assert not sources.offline_when_unreachable(tmp_path, None)  # local folders need no Hub
    cached_repo(hf_home, "org/cached", {"config.json": "{}"})
    check_source("org/cached")
    assert sources.offline_when_unreachable(tmp_path, "org/cached")
    assert constants.HF_HUB_OFFLINE and sources.hub_offline()


def test_a_saved_question_style_words_the_questions(tiny_vlm, tmp_path, hf_home):
    from text4seg.infer import Segmenter
    from text4seg.protocol.asking import Asking

    model, processor = tiny_vlm
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    Asking(question_style="text4seg").save(tmp_path / "model")
    seg = Segmenter.from_pretrained(tmp_path / "model", device="cpu", constrained=False)
    assert seg.query("white horse").question == "Can you segment the white horse in the image?"
    assert seg.query(["cat", "dog"]).question == "cat | dog"
    assert seg.settings()["question_style"] == "text4seg"
    asked = Segmenter.from_pretrained(
        tmp_path / "model", device="cpu", constrained=False, question="Find {expression}."
    )
    assert asked.query("white horse").question == "Find white horse."  # an explicit question wins
    with pytest.raises(ValueError, match="question style must be one of"):
        Segmenter(model, processor, constrained=False, question_style="pipe")


# -- Hub ids loaded from the cache: no network request, old adapter layouts remapped -----------------
@pytest.fixture()
def no_network(monkeypatch):
    """Any connection or name lookup fails the test (installed after the Hub probe's answer is cached)."""

    def refuse(*_, **__):
        raise AssertionError("a network request was made")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def saved_vlm(tiny_vlm, tmp_path_factory):
    model, processor = tiny_vlm
    path = tmp_path_factory.mktemp("tiny_qwen2_vl")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_hub_options_read_the_environment_of_the_call(hf_home, tmp_path, monkeypatch):
    assert sources.hub_options(tmp_path) == {"cache_dir": str(hf_home / "hub"), "local_files_only": True}
    assert not sources.hub_options("org/model", local_files_only=False)["local_files_only"]  # as asked
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(sources, "hub_reachable", lambda: pytest.fail("local folders need no Hub probe"))
    assert not sources.hub_options(tmp_path)["local_files_only"]
    monkeypatch.setattr(sources, "hub_reachable", lambda: False)
    assert sources.hub_options(tmp_path, "org/adapter")["local_files_only"]


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable"])
def test_a_cached_hub_model_loads_without_a_network_request(saved_vlm, hf_home, monkeypatch, how, request):
    """Segmenter.from_pretrained("org/tiny") from the cache alone (before: 145 s of retries, then OSError:
    huggingface_hub reads HF_HUB_OFFLINE and the cache folder once, at import)."""
    from text4seg.infer import Segmenter

    cached_repo(hf_home, "org/tiny", {"text4seg.json": '{"grid": [6, 6]}'}, folder=saved_vlm)
    if how == "unreachable":
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
        sources._reachable.cache_clear()
        assert not sources.hub_reachable()
    request.getfixturevalue("no_network")
    seg = Segmenter.from_pretrained("org/tiny", device="cpu", constrained=False)
    assert seg.fmt.grid == (6, 6)  # the cached text4seg.json
    assert type(seg.model).__name__ == "Qwen2VLForConditionalGeneration"
    sources._reachable.cache_clear()


def _old_layout(key: str) -> str:
    """Qwen2-VL's module names before transformers 4.52 (`model.X` text, `visual.X` vision)."""
    return key.replace("base_model.model.model.language_model.", "base_model.model.model.").replace(
        "base_model.model.model.visual.", "base_model.model.visual."
    )


def test_a_hub_adapter_in_the_old_layout_is_remapped_from_the_cache(saved_vlm, tiny_vlm, hf_home, no_network):
    from peft import LoraConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save

    from text4seg.infer import Segmenter

    model, _ = tiny_vlm
    lora = LoraConfig(r=2, target_modules=["q_proj", "qkv"], init_lora_weights=False)
    peft_model = get_peft_model(type(model).from_pretrained(saved_vlm), lora)
    saved = get_peft_model_state_dict(peft_model)
    assert any(".visual." in k for k in saved) and any(".language_model." in k for k in saved)
    config = {
        **lora.to_dict(),
        "base_model_name_or_path": str(saved_vlm),
        "target_modules": ["q_proj", "qkv"],
    }
    old = {_old_layout(k): v.contiguous() for k, v in saved.items()}
    files = {"adapter_config.json": json.dumps(config), "adapter_model.safetensors": save(old)}
    cached_repo(hf_home, "org/old-adapter", {**files, "text4seg.json": '{"grid": [5, 5]}'})
    seg = Segmenter.from_pretrained(saved_vlm, adapter="org/old-adapter", device="cpu", constrained=False)
    loaded = get_peft_model_state_dict(seg.model)
    assert sorted(loaded) == sorted(saved)  # the vision tower's tensors too (PEFT alone drops them)
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    assert seg.fmt.grid == (5, 5)


def test_a_hub_adapter_missing_from_the_cache_is_named(hf_home):
    from text4seg.models.loading import adapter_folder

    cached_repo(hf_home, "org/partial", {"text4seg.json": "{}"})  # settings read, weights never fetched
    with pytest.raises(OSError, match="adapter org/partial: its config and weights are not in the local"):
        adapter_folder("org/partial", cache_dir=hf_home / "hub", local_files_only=True)
    with pytest.raises(OSError, match="adapter org/absent"):
        adapter_folder("org/absent", cache_dir=hf_home / "hub", local_files_only=True)
