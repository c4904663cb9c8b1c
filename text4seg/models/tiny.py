"""Tiny random-initialised image-text-to-text models, built offline from configs.

Tests, benchmarks and the demo need real `transformers` architectures without downloading weights.
`build_tiny(arch)` returns a `(model, processor)` pair whose tokenizer is a byte-level BPE trained on
generated descriptor-like text (so descriptors take few tokens), wrapped in `PreTrainedTokenizerFast`
with a chat template in the style of the real checkpoints, and whose processor is assembled from the
architecture's own classes. `model.save_pretrained` + `processor.save_pretrained` reload through
`AutoModelForImageTextToText` / `AutoProcessor`.
"""

from __future__ import annotations

import copy
import functools
import random
from collections.abc import Iterator
from typing import Any

ARCHS: tuple[str, ...] = (
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "llava",
    "idefics3",
    "smolvlm",
    "paligemma",
    "gemma3",
    "internvl",
)

_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<s>",
    "</s>",
    "<unk>",
    "<pad>",
    "<image>",
    "<video>",
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
    "<bos>",
    "<eos>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
)

_COLOURS = ("red", "green", "blue", "yellow", "white", "black", "orange", "purple", "pink", "grey")
_SHAPES = ("circle", "square", "triangle", "star", "ellipse", "cross", "ring", "rectangle")
_WORDS = (
    "person cat dog car bus chair table cup bottle bird horse sheep cow train boat plane left right top "
    "bottom middle big small near far the a an of on in with and to is this that there image picture photo "
    "segment mask show where please find which object region area find the"
).split()
_QUESTIONS = (
    "Please segment the {x} in this image.",
    "Can you segment {x}?",
    "Where is the {x}? Answer with a mask.",
    "What is {x} in the image? Please respond with segmentation mask.",
    "Segment {x}.",
)
_ANSWERS = ("Sure, here is the mask.", "It is {x}.", "Here is {x}.", "Sure, it is here.", "No such object.")


def _descriptor(rng: random.Random, label: str, grid: int) -> str:
    """A descriptor-like R-RLE text with a rectangle of `label` on `others` (the corpus for BPE)."""
    r0, r1 = sorted(rng.sample(range(grid + 1), 2))
    c0, c1 = sorted(rng.sample(range(grid + 1), 2))
    rows = []
    for r in range(grid):
        if r0 <= r < r1 and c1 > c0:
            runs = [("others", c0), (label, c1 - c0), ("others", grid - c1)]
            rows.append("| ".join(f"{name} *{n}" for name, n in runs if n))
        else:
            rows.append(f"others *{grid}")
    return "\n ".join(rows) + "\n"


def _corpus(n: int = 400, seed: int = 0) -> Iterator[str]:
    rng = random.Random(seed)
    for i in range(n):
        label = f"{rng.choice(_COLOURS)} {rng.choice(_SHAPES)}"
        if i % 3 == 0:
            label = " ".join(rng.choices(_WORDS, k=rng.randint(1, 4)))
        grid = rng.choice((4, 8, 16, 16, 16, 24, 32))
        question = rng.choice(_QUESTIONS).format(x=label)
        answer = rng.choice(_ANSWERS).format(x=label)
        yield f"{question}\n{answer}\n<seg>{_descriptor(rng, label, grid)}</seg>"
        yield " ".join(rng.choices(_WORDS, k=12)) + f" {rng.randint(0, 9999)}."


@functools.lru_cache(maxsize=4)
def _trained_tokenizer_json(vocab_size: int = 640) -> str:
    """Train a byte-level BPE once per process (cached) and return it serialised."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok.to_str()


def _template(
    *, bos: str, user: str, assistant: str, end_user: str, end_assistant: str, gen: str, image: str
) -> str:
    """A Jinja chat template in the layout of the real checkpoints (images rendered where they sit)."""

    def lit(s: str) -> str:
        return "{{ " + repr(s) + " }}"

    return (
        lit(bos)
        + "{% for m in messages %}"
        + "{% if m['role'] == 'assistant' %}"
        + lit(assistant)
        + "{% else %}"
        + lit(user)
        + "{% endif %}"
        + "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
        + "{% for c in m['content'] %}"
        + "{% if c['type'] == 'image' %}"
        + lit(image)
        + "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
        + "{% endfor %}{% endif %}"
        + "{% if m['role'] == 'assistant' %}"
        + lit(end_assistant)
        + "{% else %}"
        + lit(end_user)
        + "{% endif %}"
        + "{% endfor %}"
        + "{% if add_generation_prompt %}"
        + lit(gen)
        + "{% endif %}"
    )


_QWEN_TEMPLATE = _template(
    bos="",
    user="<|im_start|>user\n",
    assistant="<|im_start|>assistant\n",
    end_user="<|im_end|>\n",
    end_assistant="<|im_end|>\n",
    gen="<|im_start|>assistant\n",
    image="<|vision_start|><|image_pad|><|vision_end|>",
)
_LLAVA_TEMPLATE = _template(
    bos="",
    user="USER: ",
    assistant="ASSISTANT: ",
    end_user=" ",
    end_assistant="</s>",
    gen="ASSISTANT:",
    image="<image>\n",
)
_IDEFICS_TEMPLATE = _template(
    bos="<|im_start|>",
    user="User:",
    assistant="Assistant: ",
    end_user="<end_of_utterance>\n",
    end_assistant="<end_of_utterance>\n",
    gen="Assistant:",
    image="<image>",
)
_GEMMA_TEMPLATE = _template(
    bos="<bos>",
    user="<start_of_turn>user\n",
    assistant="<start_of_turn>model\n",
    end_user="<end_of_turn>\n",
    end_assistant="<end_of_turn>\n",
    gen="<start_of_turn>model\n",
    image="<start_of_image>",
)

_INTERNVL_TEMPLATE = _template(
    bos="",
    user="<|im_start|>user\n",
    assistant="<|im_start|>assistant\n",
    end_user="<|im_end|>\n",
    end_assistant="<|im_end|>\n",
    gen="<|im_start|>assistant\n",
    image="<IMG_CONTEXT>\n",
)

# Per architecture: special-token roles and chat template (PaliGemma, like the real checkpoints, has none).
_TOKEN_ROLES: dict[str, dict[str, Any]] = {
    "qwen": dict(
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=_QWEN_TEMPLATE,
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    ),
    "llava": dict(
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        chat_template=_LLAVA_TEMPLATE,
        extra_special_tokens={"image_token": "<image>"},
    ),
    "idefics3": dict(
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<pad>",
        unk_token="<unk>",
        chat_template=_IDEFICS_TEMPLATE,
        extra_special_tokens={
            "image_token": "<image>",
            "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    ),
    "paligemma": dict(
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        chat_template=None,
        extra_special_tokens={"image_token": "<image>"},
    ),
    "gemma3": dict(
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        chat_template=_GEMMA_TEMPLATE,
        extra_special_tokens={
            "image_token": "<image_soft_token>",
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
        },
    ),
    "internvl": dict(
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=_INTERNVL_TEMPLATE,
        extra_special_tokens={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    ),
}
_FAMILY = {
    "qwen2_vl": "qwen",
    "qwen2_5_vl": "qwen",
    "qwen3_vl": "qwen",
    "llava": "llava",
    "idefics3": "idefics3",
    "smolvlm": "idefics3",
    "paligemma": "paligemma",
    "gemma3": "gemma3",
    "internvl": "internvl",
}


def build_tokenizer(arch: str, vocab_size: int = 640):
    """A fresh `PreTrainedTokenizerFast` for `arch` (the BPE itself is trained once per process)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    roles = dict(_TOKEN_ROLES[_family(arch)])
    chat_template = roles.pop("chat_template")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json(vocab_size)),
        model_max_length=4096,
        padding_side="right",
        **roles,
    )
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def _family(arch: str) -> str:
    if arch not in _FAMILY:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return _FAMILY[arch]


def _merge(base: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _llama_text(tok, hidden: int, layers: int, heads: int) -> dict[str, Any]:
    return dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        head_dim=hidden // heads,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )


def build_tiny(arch: str, *, seed: int = 0, **kwargs: Any):
    """Build a random-initialised `(model, processor)` of architecture `arch` (one of `ARCHS`).

    Keywords are those of `tiny_config_and_processor`. Deterministic for a given `seed`.
    """
    import torch
    import transformers as tf

    config, processor = tiny_config_and_processor(arch, **kwargs)
    torch.manual_seed(seed)
    model = tf.AutoModelForImageTextToText.from_config(config)
    model.eval()
    return model, processor


def tiny_config_and_processor(
    arch: str,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    vocab_size: int = 640,
    text_config: dict[str, Any] | None = None,
    vision_config: dict[str, Any] | None = None,
    **overrides: Any,
):
    """The model config and the processor of a tiny `arch` model (no weights: build them with `from_config`).

    `image_size` must be a multiple of `2 * patch_size`. `text_config` / `vision_config` entries and any
    other keyword (top-level config fields) override the tiny defaults; sizes can be raised to real ones
    (bench/gpu_train.py builds a Qwen2.5-VL-3B shape this way).
    """
    import transformers as tf

    family = _family(arch)
    if image_size % (2 * patch_size):
        raise ValueError(f"image_size {image_size} must be a multiple of 2 * patch_size ({2 * patch_size})")
    tok = build_tokenizer(arch, vocab_size)
    grid = image_size // patch_size
    head_dim = hidden_size // num_heads
    vh = vision_hidden_size

    if family == "qwen":
        quarter = head_dim // 2
        mrope = [quarter - 2 * (quarter // 3), quarter // 3, quarter // 3]
        text = _llama_text(tok, hidden_size, num_layers, num_heads)
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope}
        ids = dict(
            image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
            video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
            vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
            vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
        )
        common_vision = dict(
            depth=vision_layers,
            num_heads=2,
            patch_size=patch_size,
            spatial_merge_size=2,
            temporal_patch_size=2,
        )
        if arch == "qwen2_vl":
            vision = dict(common_vision, embed_dim=vh, hidden_size=hidden_size, mlp_ratio=2)
            cfg_cls = tf.Qwen2VLConfig
        elif arch == "qwen2_5_vl":
            vision = dict(
                common_vision,
                hidden_size=vh,
                intermediate_size=vh * 2,
                out_hidden_size=hidden_size,
                window_size=patch_size * 4,
                fullatt_block_indexes=[vision_layers - 1],
            )
            cfg_cls = tf.Qwen2_5_VLConfig
        else:
            text["rope_parameters"]["mrope_interleaved"] = True
            vision = dict(
                common_vision,
                hidden_size=vh,
                intermediate_size=vh * 2,
                out_hidden_size=hidden_size,
                num_position_embeddings=grid * grid,
                deepstack_visual_indexes=[vision_layers - 1],
            )
            cfg_cls = tf.Qwen3VLConfig
        config = cfg_cls(
            text_config=_merge(text, text_config),
            vision_config=_merge(vision, vision_config),
            **_merge(dict(ids, tie_word_embeddings=True), overrides),
        )
        pixels = image_size * image_size
        ip_kwargs = dict(
            patch_size=patch_size,
            merge_size=2,
            temporal_patch_size=2,
            size={"shortest_edge": pixels, "longest_edge": pixels},
        )
        vp_cls = tf.Qwen3VLVideoProcessor if arch == "qwen3_vl" else tf.Qwen2VLVideoProcessor
        proc_cls = {
            "qwen2_vl": tf.Qwen2VLProcessor,
            "qwen2_5_vl": tf.Qwen2_5_VLProcessor,
            "qwen3_vl": tf.Qwen3VLProcessor,
        }[arch]
        processor = proc_cls(
            image_processor=tf.Qwen2VLImageProcessor(**ip_kwargs),
            tokenizer=tok,
            video_processor=vp_cls(**ip_kwargs),
            chat_template=tok.chat_template,
        )
    elif family == "llava":
        vision = dict(
            hidden_size=vh,
            intermediate_size=vh * 2,
            num_hidden_layers=vision_layers,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
            projection_dim=vh,
            model_type="clip_vision_model",
        )
        config = tf.LlavaConfig(
            text_config=_merge(
                dict(_llama_text(tok, hidden_size, num_layers, num_heads), model_type="llama"), text_config
            ),
            vision_config=_merge(vision, vision_config),
            **_merge(
                dict(
                    image_token_index=tok.convert_tokens_to_ids("<image>"),
                    image_seq_length=grid * grid,
                    vision_feature_select_strategy="default",
                    vision_feature_layer=-2,
                    tie_word_embeddings=True,
                ),
                overrides,
            ),
        )
        processor = tf.LlavaProcessor(
            image_processor=tf.CLIPImageProcessor(
                size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
            ),
            tokenizer=tok,
            patch_size=patch_size,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=tok.chat_template,
        )
    elif family == "idefics3":
        scale = 2
        vision = dict(
            hidden_size=vh,
            intermediate_size=vh * 2,
            num_hidden_layers=vision_layers,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
        )
        text = dict(_llama_text(tok, hidden_size, num_layers, num_heads), model_type="llama")
        ip_kwargs = dict(
            size={"longest_edge": image_size},
            max_image_size={"longest_edge": image_size},
            do_image_splitting=False,
        )
        seq_len = (grid * grid) // (scale * scale)
        top = dict(
            image_token_id=tok.convert_tokens_to_ids("<image>"),
            scale_factor=scale,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=True,
        )
        if arch == "idefics3":
            config = tf.Idefics3Config(
                text_config=_merge(text, text_config),
                vision_config=_merge(vision, vision_config),
                **_merge(top, overrides),
            )
            processor = tf.Idefics3Processor(
                image_processor=tf.Idefics3ImageProcessor(**ip_kwargs),
                tokenizer=tok,
                image_seq_len=seq_len,
                chat_template=tok.chat_template,
            )
        else:
            config = tf.SmolVLMConfig(
                text_config=_merge(text, text_config),
                vision_config=_merge(vision, vision_config),
                **_merge(top, overrides),
            )
            processor = tf.SmolVLMProcessor(
                image_processor=tf.SmolVLMImageProcessor(**ip_kwargs),
                tokenizer=tok,
                video_processor=tf.SmolVLMVideoProcessor(**ip_kwargs),
                image_seq_len=seq_len,
                chat_template=tok.chat_template,
            )
    elif family == "paligemma":
        ip = tf.SiglipImageProcessor(size={"height": image_size, "width": image_size})
        ip.image_seq_length = grid * grid
        processor = tf.PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
        vocab = len(processor.tokenizer)
        text = dict(
            _llama_text(tok, hidden_size, num_layers, num_heads), model_type="gemma", vocab_size=vocab
        )
        text["num_image_tokens"] = grid * grid
        vision = dict(
            hidden_size=vh,
            intermediate_size=vh * 2,
            num_hidden_layers=vision_layers,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
            projection_dim=hidden_size,
            vision_use_head=False,
            model_type="siglip_vision_model",
        )
        config = tf.PaliGemmaConfig(
            text_config=_merge(text, text_config),
            vision_config=_merge(vision, vision_config),
            **_merge(
                dict(
                    image_token_index=tok.convert_tokens_to_ids("<image>"),
                    vocab_size=vocab,
                    projection_dim=hidden_size,
                    hidden_size=hidden_size,
                ),
                overrides,
            ),
        )
    elif family == "internvl":
        seq_len = (grid * grid) // 4  # pixel shuffle with downsample_ratio 0.5
        vision = dict(
            hidden_size=vh,
            intermediate_size=vh * 2,
            num_hidden_layers=vision_layers,
            num_attention_heads=2,
            image_size=[image_size, image_size],
            patch_size=[patch_size, patch_size],
        )
        text = dict(_llama_text(tok, hidden_size, num_layers, num_heads), model_type="qwen2")
        config = tf.InternVLConfig(
            text_config=_merge(text, text_config),
            vision_config=_merge(vision, vision_config),
            **_merge(
                dict(
                    image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
                    image_seq_length=seq_len,
                    downsample_ratio=0.5,
                    vision_feature_layer=-1,
                    tie_word_embeddings=True,
                ),
                overrides,
            ),
        )
        ip_kwargs = dict(
            size={"height": image_size, "width": image_size}, crop_to_patches=False, max_patches=1
        )
        processor = tf.InternVLProcessor(
            image_processor=tf.GotOcr2ImageProcessor(**ip_kwargs),
            tokenizer=tok,
            video_processor=tf.InternVLVideoProcessor(size={"height": image_size, "width": image_size}),
            image_seq_length=seq_len,
            chat_template=tok.chat_template,
        )
    else:  # gemma3
        mm_tokens = max(1, grid // 2) ** 2
        text = _llama_text(tok, hidden_size, num_layers, num_heads)
        text.update(sliding_window=512, query_pre_attn_scalar=head_dim)
        vision = dict(
            hidden_size=vh,
            intermediate_size=vh * 2,
            num_hidden_layers=vision_layers,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
            vision_use_head=False,
            model_type="siglip_vision_model",
        )
        config = tf.Gemma3Config(
            text_config=_merge(text, text_config),
            vision_config=_merge(vision, vision_config),
            **_merge(
                dict(
                    mm_tokens_per_image=mm_tokens,
                    boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                    eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
                    image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
                    tie_word_embeddings=True,
                ),
                overrides,
            ),
        )
        processor = tf.Gemma3Processor(
            image_processor=tf.Gemma3ImageProcessor(
                size={"height": image_size, "width": image_size}, do_pan_and_scan=False
            ),
            tokenizer=tok,
            image_seq_length=mm_tokens,
            chat_template=tok.chat_template,
        )

    return config, processor


def count_parameters(model) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen = {id(p): p.numel() for p in model.parameters()}
    return sum(seen.values())
