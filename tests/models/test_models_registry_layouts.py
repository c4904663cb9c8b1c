"""The real conversation layouts of the recipe models, as facts, checked under each tiny model's template:
the prompt training builds is the prompt inference builds, and training labels exactly the answer and
the end of turn (the labels of every architecture are checked in tests/train/test_train_collate.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from PIL import Image

from text4seg.models import registry
from text4seg.models.tiny import ARCHS, build_tiny
from text4seg.protocol.records import question_text
from text4seg.train.collate import IGNORE_INDEX, Collator

QUESTION = "Please segment the red circle."
ANSWER = "Sure, <seg>others *2| red circle *2\n</seg>"


@dataclass(frozen=True)
class Layout:
    """How a model's released checkpoint lays out one image and a question, up to where it answers."""

    model: str
    prompt: str  # `render_prompt` of one image and "{q}" (the image as its template writes it)
    end: str  # the token that closes an assistant turn (the EOS where the template closes with none)
    system: bool  # whether the template adds a system prompt to a conversation without one
    bos: str | None  # the one BOS a sequence starts with (after the image tokens for PaliGemma)


_CHATML_USER = "<|im_start|>user\n{image}{q}<|im_end|>\n<|im_start|>assistant\n"
_QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
_QWEN_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
_IDEFICS = "<|im_start|>User:<image>{q}<end_of_utterance>\nAssistant:"

LAYOUTS: dict[str, Layout] = {
    # Vicuna v1 style as llava-hf writes it: no system prompt, image first, the assistant turn closes with
    # a space only, so the end of an answer is the EOS </s>.
    "llava": Layout("llava-hf/llava-1.5-7b-hf", "USER: <image>\n{q} ASSISTANT:", "</s>", False, "<s>"),
    "qwen2_vl": Layout(
        "Qwen/Qwen2-VL-2B-Instruct",
        _QWEN_SYSTEM + _CHATML_USER.replace("{image}", _QWEN_IMAGE),
        "<|im_end|>",
        True,
        None,
    ),
    "qwen2_5_vl": Layout(
        "Qwen/Qwen2.5-VL-3B-Instruct, -7B-Instruct",
        _QWEN_SYSTEM + _CHATML_USER.replace("{image}", _QWEN_IMAGE),
        "<|im_end|>",
        True,
        None,
    ),
    "qwen3_vl": Layout(
        "Qwen/Qwen3-VL-4B-Instruct", _CHATML_USER.replace("{image}", _QWEN_IMAGE), "<|im_end|>", False, None
    ),
    # The processor expands <IMG_CONTEXT> to <img><IMG_CONTEXT>×256</img>.
    "internvl": Layout(
        "OpenGVLab/InternVL3-2B-hf",
        _CHATML_USER.replace("{image}", "<IMG_CONTEXT>\n"),
        "<|im_end|>",
        False,
        None,
    ),
    "idefics3": Layout(
        "HuggingFaceM4/Idefics3-8B-Llama3", _IDEFICS, "<end_of_utterance>", False, "<|im_start|>"
    ),
    "smolvlm": Layout(
        "HuggingFaceTB/SmolVLM2-2.2B-Instruct", _IDEFICS, "<end_of_utterance>", False, "<|im_start|>"
    ),
    # A system prompt is folded into the first user turn; the processor expands <start_of_image>.
    "gemma3": Layout(
        "google/gemma-3-4b-it",
        "<bos><start_of_turn>user\n<start_of_image>{q}<end_of_turn>\n<start_of_turn>model\n",
        "<end_of_turn>",
        False,
        "<bos>",
    ),
    # No chat template: prefix = image tokens + <bos> + question + "\n" (the processor adds <bos> and the
    # newline), suffix = answer + <eos>, marked with token_type_ids 1.
    "paligemma": Layout("google/paligemma2-3b-pt-448", "<image>{q}", "<eos>", False, "<bos>"),
}


def _record(image: Image.Image) -> dict:
    return {
        "id": "layout/0",
        "images": [image],
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
            {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]},
        ],
    }


def _inference_ids(processor, question: str, image: Image.Image) -> list[int]:
    """The prompt ids `Segmenter` feeds `generate` (infer/segmenter.py `_encode`: render_prompt of the bare
    question, the processor's special tokens as `add_special_tokens_for` says)."""
    prompt = registry.render_prompt(processor, question)
    enc = processor(
        text=[prompt],
        images=[[image]],
        return_tensors="pt",
        add_special_tokens=registry.add_special_tokens_for(processor, prompt),
    )
    return enc["input_ids"][0].tolist()


def test_every_tiny_architecture_has_its_layout_facts():
    assert set(LAYOUTS) == set(ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_template_follows_the_real_layout(arch):
    _, processor = build_tiny(arch)
    layout = LAYOUTS[arch]
    assert registry.render_prompt(processor, QUESTION) == layout.prompt.replace("{q}", QUESTION)
    assert registry.end_of_turn(processor) == layout.end
    expected_layout = "image_tokens_then_text" if arch == "paligemma" else "chat_template"
    assert registry.arch_facts(arch).prompt_layout == expected_layout
    if layout.system:
        with_system = [{"role": "system", "content": "Be brief."}, *registry.user_messages(QUESTION)]
        rendered = registry.render_prompt(processor, with_system)
        assert "Be brief." in rendered and "You are a helpful assistant." not in rendered


@pytest.mark.parametrize("arch", ARCHS)
def test_training_prompt_is_the_inference_prompt_and_labels_are_answer_and_end(arch):
    model, processor = build_tiny(arch)
    image = Image.new("RGB", (48, 32), (200, 30, 30))
    record = _record(image)
    encoded = Collator(processor, answer_token_type=registry.answer_token_type(model)).encode(record)
    ids = encoded.features["input_ids"][0].tolist()
    n_prompt = sum(1 for label in encoded.labels if label == IGNORE_INDEX)
    prompt_ids = _inference_ids(processor, question_text(record), image)
    assert ids[:n_prompt] == prompt_ids
    bos = LAYOUTS[arch].bos
    bos_id = processor.tokenizer.convert_tokens_to_ids(bos) if bos else processor.tokenizer.bos_token_id
    first_text = next(i for i, t in enumerate(prompt_ids) if t != model.config.image_token_id)
    assert (prompt_ids[first_text] == bos_id) == (bos is not None)
    assert prompt_ids.count(bos_id) == (1 if bos else 0)
    kept = [label for label in encoded.labels if label != IGNORE_INDEX]
    assert processor.tokenizer.decode(kept) == ANSWER + LAYOUTS[arch].end


def test_paligemma_prefix_and_suffix_are_the_processors_own():
    """The collator's PaliGemma sequence is what PaliGemmaProcessor builds from (prefix, suffix)."""
    model, processor = build_tiny("paligemma")
    image = Image.new("RGB", (48, 32), (200, 30, 30))
    encoded = Collator(processor, answer_token_type=registry.answer_token_type(model)).encode(_record(image))
    reference = processor(text=[QUESTION], images=[image], suffix=[ANSWER], return_tensors="pt")
    assert encoded.features["input_ids"][0].tolist() == reference["input_ids"][0].tolist()
    assert encoded.features["token_type_ids"][0].tolist() == reference["token_type_ids"][0].tolist()
    assert encoded.labels == reference["labels"][0].tolist()
    tok = processor.tokenizer
    ids = encoded.features["input_ids"][0].tolist()
    n_image = ids.count(tok.convert_tokens_to_ids("<image>"))
    assert n_image > 0 and ids[:n_image] == [tok.convert_tokens_to_ids("<image>")] * n_image
    assert ids[n_image] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    prefix = tok.decode(ids[n_image + 1 : encoded.labels.index(next(x for x in encoded.labels if x >= 0))])
    assert prefix == QUESTION + "\n"
