"""Segmenter on a tiny random Qwen2-VL: masks at image size, batching, modes, EXIF, errors, refiner hook."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image
from support.images import exif_rotated_jpeg, mode_images

import text4seg as t4s
from text4seg.codec import LabelError
from text4seg.infer.segmenter import SegmentationResult, Segmenter
from text4seg.models.tiny import ARCHS
from text4seg.protocol.images import ImageReadError

GRID = 6


@pytest.fixture(scope="module")
def segmenter(tiny_vlm):
    model, processor = tiny_vlm
    return Segmenter(model, processor, grid=GRID)


def _photo(h: int = 30, w: int = 44, seed: int = 0) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8))


def test_segment_returns_a_full_result(segmenter):
    result = segmenter.segment(_photo(), "the red circle")
    assert isinstance(result, SegmentationResult)
    assert result.mask.shape == (30, 44) and result.mask.dtype == bool
    assert result.grid.shape == (GRID, GRID)
    assert result.labels == ["others", "the red circle"]
    assert result.ok and result.repairs == []
    strict = t4s.decode(result.text, t4s.TEXT4SEG.with_grid(GRID), strict=True, labels=result.labels)
    assert np.array_equal(strict.grid, result.grid)
    assert result.box == t4s.mask_to_box(result.mask)
    assert result.forward_passes > 0 and result.new_tokens >= result.forward_passes - 1
    assert result.question == "Please segment the red circle in this image."
    for key in ("load", "encode", "generate", "decode", "total"):
        assert result.timings[key] >= 0
    assert result.coarse_mask is not None and result.refined_mask is None
    assert result.summary()["labels"] == result.labels


def test_class_list_gives_a_label_map(segmenter):
    result = segmenter.segment(_photo(), ["cat", "dog", "tree"])
    assert result.labels == ["others", "cat", "dog", "tree"]
    assert result.label_map.shape == (30, 44) and result.label_map.max() <= 3
    assert np.array_equal(result.mask, result.label_map != 0)
    assert result.ok


def test_batch_matches_single(segmenter):
    pairs = [
        (_photo(seed=1), "red circle"),
        (_photo(20, 24, seed=2), "the small dog on the left"),
        (_photo(seed=3), ["cat", "dog"]),
    ]
    batched = segmenter.segment_batch(pairs, batch_size=3)
    assert [r.batch_size for r in batched] == [3, 3, 3]
    for (image, target), together in zip(pairs, batched, strict=True):
        alone = segmenter.segment(image, target)
        assert alone.text == together.text
        assert np.array_equal(alone.mask, together.mask)
    assert len(segmenter.segment_batch(pairs, batch_size=2)) == 3


def test_jump_forward_and_plain_constrained_agree(segmenter):
    image = _photo(seed=4)
    fast = segmenter.segment_batch([(image, "blue square")], jump_forward=True)[0]
    slow = segmenter.segment_batch([(image, "blue square")], jump_forward=False)[0]
    assert fast.text == slow.text and fast.new_tokens == slow.new_tokens
    assert fast.forward_passes < slow.forward_passes


def test_free_decoding_is_repaired_leniently(tiny_vlm):
    model, processor = tiny_vlm
    free = Segmenter(model, processor, grid=GRID, constrained=False, max_new_tokens=12)
    result = free.segment(_photo(), "red circle")
    assert not result.constrained
    assert result.mask.shape == (30, 44) and result.repairs  # a random model never writes a descriptor
    assert result.new_tokens <= 12


@pytest.mark.parametrize("mode", sorted(mode_images()))
def test_every_image_mode(segmenter, mode):
    image = mode_images()[mode]
    result = segmenter.segment(image, "thing")
    assert result.mask.shape == (image.height, image.width) and result.ok


def test_arrays_and_paths(segmenter, tmp_path):
    path = tmp_path / "photo.png"
    _photo().save(path)
    for source in (path, str(path), np.asarray(_photo()), np.asarray(_photo().convert("L"))):
        assert segmenter.segment(source, "thing").mask.shape == (30, 44)


def test_exif_rotation_is_honoured(segmenter, tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(exif_rotated_jpeg())
    stored = Image.open(path)
    assert stored.size == (20, 12)
    assert segmenter.segment(path, "red half").mask.shape == (20, 12)  # (H, W) as displayed


def test_bad_inputs_raise_clear_errors(segmenter, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ImageReadError, match="pair 0: cannot read image .*broken.jpg"):
        segmenter.segment(broken, "cat")
    with pytest.raises(ImageReadError, match="not found"):
        segmenter.segment(tmp_path / "nope.png", "cat")
    with pytest.raises(ValueError, match="pair 1: expression is empty"):
        segmenter.segment_batch([(_photo(), "cat"), (_photo(), "   ")])
    with pytest.raises(ValueError, match="class list is empty"):
        segmenter.segment(_photo(), [])
    with pytest.raises(LabelError):
        segmenter.segment(_photo(), "cat *3")
    with pytest.raises(ValueError, match="background"):
        segmenter.segment(_photo(), "others")
    with pytest.raises(TypeError, match="expression string or a list"):
        segmenter.segment(_photo(), 3)
    with pytest.raises(ValueError, match="pair 0 must be"):
        segmenter.segment_batch([(_photo(),)])
    with pytest.raises(ValueError, match="batch_size"):
        segmenter.segment_batch([(_photo(), "cat")], batch_size=0)


@dataclass
class _Refined:
    mask: np.ndarray


class InvertingRefiner:
    """Stands in for SamRefiner: records its inputs and returns the inverted coarse mask."""

    def __init__(self):
        self.calls = []

    def refine(self, image, grid, *, coarse=None, key=None):
        self.calls.append((image.size, grid.shape, coarse.shape))
        return _Refined(~coarse)


def test_refiner_result_is_kept_next_to_the_coarse_mask(tiny_vlm):
    model, processor = tiny_vlm
    refiner = InvertingRefiner()
    segmenter = Segmenter(model, processor, grid=GRID, refiner=refiner)
    result = segmenter.segment(_photo(), "red circle")
    assert refiner.calls == [((44, 30), (GRID, GRID), (30, 44))]
    assert np.array_equal(result.refined_mask, ~result.coarse_mask)
    assert np.array_equal(result.mask, result.refined_mask)
    assert np.array_equal(result.coarse_label_map != 0, result.coarse_mask)
    assert result.timings["refine"] >= 0 and result.summary()["refined"]


def test_from_pretrained_on_a_saved_model(tiny_vlm, tmp_path):
    model, processor = tiny_vlm
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    segmenter = Segmenter.from_pretrained(tmp_path, device="cpu", grid=GRID, dtype="float32")
    reference = Segmenter(model, processor, grid=GRID)
    image = _photo(seed=5)
    assert segmenter.segment(image, "cat").text == reference.segment(image, "cat").text


def test_peft_adapter_from_pretrained(tiny_vlm, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, processor = tiny_vlm
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    model.save_pretrained(base_dir)
    processor.save_pretrained(base_dir)
    peft_model = get_peft_model(
        type(model).from_pretrained(base_dir), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    )
    peft_model.save_pretrained(adapter_dir)
    segmenter = Segmenter.from_pretrained(base_dir, adapter=adapter_dir, device="cpu", grid=GRID)
    assert hasattr(segmenter.model, "get_base_model")
    result = segmenter.segment(_photo(seed=6), "cat")
    assert result.ok and result.forward_passes > 0
    assert result.text == Segmenter(model, processor, grid=GRID).segment(_photo(seed=6), "cat").text


def test_missing_engine_is_explained(tiny_vlm, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "llguidance", None)
    model, processor = tiny_vlm
    with pytest.raises(ImportError, match="pip install llguidance"):
        Segmenter(model, processor, grid=GRID)
    assert Segmenter(model, processor, grid=GRID, constrained=False).constrained is False


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "qwen2_vl"])  # qwen2_vl: the tests above
def test_every_architecture_jump_forward_matches_plain(arch):
    """Jump-forward feeds several tokens per pass through each model's own generation plumbing
    (position ids, token types, caches): the text must equal token-by-token constrained decoding."""
    from text4seg.models.tiny import build_tiny

    model, processor = build_tiny(arch, seed=0)
    segmenter = Segmenter(model, processor, grid=4)
    pairs = [(_photo(seed=7), "red circle"), (_photo(24, 40, seed=8), "the cat on the left")]
    fast = segmenter.segment_batch(pairs, batch_size=2, jump_forward=True)
    slow = segmenter.segment_batch(pairs, batch_size=2, jump_forward=False)
    assert [r.text for r in fast] == [r.text for r in slow]
    assert all(r.ok for r in fast) and fast[0].forward_passes < slow[0].forward_passes


def test_target_label_and_saved_settings(tiny_vlm, tmp_path):
    model, processor = tiny_vlm
    segmenter = Segmenter(model, processor, grid=GRID, target_label="target", answer_sentences="none")
    result = segmenter.segment(_photo(), "the red circle")
    assert result.labels == ["others", "target"] and result.ok
    assert set(t4s.decode(result.text, t4s.TEXT4SEG.with_grid(GRID), strict=True).labels) <= {
        "others",
        "target",
    }
    assert segmenter.segment(_photo(), ["cat", "dog"]).labels == ["others", "cat", "dog"]
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    segmenter.save_settings(tmp_path)
    loaded = Segmenter.from_pretrained(tmp_path, device="cpu", dtype="float32")
    assert loaded.settings() == segmenter.settings()
    assert loaded.segment(_photo(), "the red circle").text == result.text
    override = Segmenter.from_pretrained(tmp_path, device="cpu", dtype="float32", target_label="thing")
    assert override.target_label == "thing" and override.fmt.grid == (GRID, GRID)
    (tmp_path / "text4seg.json").write_text('{"grid": [6, 6], "colour": "red"}')
    with pytest.raises(ValueError, match="unknown settings"):
        Segmenter.from_pretrained(tmp_path, device="cpu")
    with pytest.raises(LabelError):
        Segmenter(model, processor, grid=GRID, target_label="a| b")


def test_background_bias_trades_background_for_the_target(tiny_vlm):
    from text4seg.infer.bias import background_token_ids

    model, processor = tiny_vlm
    plain = Segmenter(model, processor, grid=GRID, answer_sentences="none")
    ids = background_token_ids(plain.tokenizer, ["others", "the red circle"])
    texts = [plain.tokenizer.decode([i]) for i in ids]
    assert texts and all("others" in t and "the red circle" not in t for t in texts)
    biased = Segmenter(model, processor, grid=GRID, answer_sentences="none", background_bias=1e4)
    pairs = [(_photo(seed=seed), "cat") for seed in range(4)]
    results = biased.segment_batch(pairs, batch_size=4)
    references = plain.segment_batch(pairs, batch_size=4)
    # whole-"others" tokens are priced out; the grammar still lets the model spell it in pieces, so the
    # target gains cells (on a random model not on every image, but over the four)
    gained = [
        int((r.grid != 0).sum() - (p.grid != 0).sum()) for r, p in zip(results, references, strict=True)
    ]
    assert all(r.ok for r in results) and sum(gained) > 0, gained
    unbiased = Segmenter(model, processor, grid=GRID, answer_sentences="none", background_bias=0.0)
    assert unbiased.segment(*pairs[0]).text == references[0].text
    assert biased.settings()["background_bias"] == 1e4


# -- the expression's length, the answer's token budget and the model's context ----------------------
def test_long_expressions_are_refused_before_generation(segmenter):
    from text4seg.infer.prompts import MAX_EXPRESSION_CHARS

    with pytest.raises(
        ValueError, match=f"pair 0: expression is 2,048 characters long; the limit is {MAX_EXPRESSION_CHARS}"
    ):
        segmenter.segment(_photo(), "a" * 2048)
    with pytest.raises(ValueError, match="class name is 501 characters long"):
        segmenter.segment(_photo(), ["cat", "b" * 501])


def test_the_models_context_bounds_expressions_and_budgets(tiny_vlm):
    from text4seg.infer.segmenter import context_length

    model, processor = tiny_vlm
    assert (
        context_length(model, processor.tokenizer) == model.config.get_text_config().max_position_embeddings
    )
    seg = Segmenter(model, processor, grid=GRID)
    short, long = seg.query("cat"), seg.query("the small dog on the left " * 10)
    assert seg.token_budget(long) > seg.token_budget(short)  # grows with the tokenized label
    byte_bound = GRID * GRID * len("cat *6| ") + GRID * len("\n ")  # the answer's text, one token a byte
    assert seg.token_budget(short) < 2 * byte_bound
    assert seg.token_budget(short, prompt_length=seg.context_length - 10) == 10
    with pytest.raises(ValueError, match="no room is left for an answer"):
        seg.token_budget(short, prompt_length=seg.context_length)
    seg.context_length = 120
    with pytest.raises(
        ValueError, match="too long for this model: the question .* exceed its context of 120"
    ):
        seg.segment(_photo(), "the small dog on the left " * 10)
    enc = seg._encode([_photo()], [short])
    seg.context_length = int(enc["input_ids"].shape[1]) + 5  # room for five answer tokens only
    result = seg.segment(_photo(), "cat")
    assert result.new_tokens <= 5 and not result.ok  # cut at the context: decoded leniently, repairs said


def test_context_length_falls_back_to_a_sane_tokenizer_limit():
    from types import SimpleNamespace

    from text4seg.infer.segmenter import context_length

    bare = SimpleNamespace(config=SimpleNamespace())
    assert context_length(bare, SimpleNamespace(model_max_length=2048)) == 2048
    assert context_length(bare, SimpleNamespace(model_max_length=int(1e30))) is None


def test_settings_beside_the_adapter_win_and_arguments_win_over_both(tiny_vlm, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, processor = tiny_vlm
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "final"
    model.save_pretrained(base_dir)
    processor.save_pretrained(base_dir)
    (base_dir / "text4seg.json").write_text(
        '{"grid": [5, 5], "target_label": "base", "answer_sentences": "none"}'
    )
    lora = get_peft_model(type(model).from_pretrained(base_dir), LoraConfig(r=2, target_modules=["q_proj"]))
    lora.save_pretrained(adapter_dir)
    (adapter_dir / "text4seg.json").write_text('{"target_label": "target"}')
    loaded = Segmenter.from_pretrained(base_dir, adapter=adapter_dir, device="cpu")
    assert (loaded.fmt.grid, loaded.target_label, loaded.answer_sentences) == ((5, 5), "target", "none")
    explicit = Segmenter.from_pretrained(
        base_dir, adapter=adapter_dir, device="cpu", target_label="mine", grid=4
    )
    assert (explicit.fmt.grid, explicit.target_label) == ((4, 4), "mine")


def test_guided_upsampling_is_the_default_and_follows_the_image(tiny_vlm):
    from text4seg.eval.metrics import mask_iou

    model, processor = tiny_vlm
    guided, bilinear = (
        Segmenter(model, processor, grid=GRID),
        Segmenter(model, processor, grid=GRID, upsample="bilinear"),
    )
    assert guided.upsample == "guided" and guided.settings()["upsample"] == "guided"
    photo = _photo(30, 44)
    result = guided.segment(photo, "the red circle")
    assert result.mask.shape == (30, 44) and result.upsample == "guided"
    assert result.summary()["upsample"] == "guided"
    # a known answer: the left half of the grid is the target, the image's edge lies a little to its right
    pixels = np.zeros((30, 44, 3), dtype=np.uint8)
    pixels[:, :25] = 230
    image = Image.fromarray(pixels)
    grid = np.zeros((GRID, GRID), dtype=np.int32)
    grid[:, : GRID // 2] = 1
    text = t4s.format_answer("", t4s.encode_label_map(grid, ["others", "the red circle"], guided.fmt))
    query = guided.query("the red circle")
    sharp = guided._finish(image, query, text, 0, True)
    soft = bilinear._finish(image, query, text, 0, True)
    truth = np.zeros((30, 44), dtype=bool)
    truth[:, :25] = True
    assert np.array_equal(sharp.mask, t4s.grid_to_mask(grid, (30, 44), "guided", image=image))
    assert np.array_equal(soft.mask, t4s.grid_to_mask(grid, (30, 44), "bilinear"))
    assert np.array_equal(sharp.grid, grid)
    assert mask_iou(sharp.mask, truth) > mask_iou(soft.mask, truth)


def test_a_question_template_of_the_other_kind_is_a_clear_error(tiny_vlm):
    model, processor = tiny_vlm
    refer_only = Segmenter(model, processor, grid=GRID, question="Where is {expression}?")
    with pytest.raises(ValueError, match=r"pair 0: the question template .* class list does not fill"):
        refer_only.segment(_photo(), ["cat", "dog"])
