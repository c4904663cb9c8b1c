"""Tiny random-initialised image-text-to-text models, built offline from configs.

Tests, benchmarks and the demo need real `transformers` architectures without downloading weights.
`build_tiny(arch)` returns a `(model, processor)` pair whose tokenizer is a byte-level BPE trained on
generated descriptor-like text (so descriptors take few tokens), wrapped in `PreTrainedTokenizerFast`
with a chat template in the style of the real checkpoints, and whose processor is assembled from the
architecture's own classes. `model.save_pretrained` + `processor.save_pretrained` reload through
`AutoModelForImageTextToText` / `AutoProcessor`.

`TINY_BUILDERS` is the table of architectures (name -> `TinyBuilder`: the tokenizer's special-token roles
and chat template, and a small builder from a `TinySpec` to `(config, processor)`); `ARCHS` lists its names.
"""

from __future__ import annotations

import copy
import functools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

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
    *,
    bos: str,
    user: str,
    assistant: str,
    end_user: str,
    end_assistant: str,
    gen: str,
    image: str,
    system: str | None = None,
    default_system: str | None = None,
) -> str:
    """A Jinja chat template in the layout of the real checkpoints (images rendered where they sit).

    `system` marks a system turn (without it a system turn renders as a user turn); `default_system` is
    the system prompt rendered when the conversation has none (Qwen2-VL and Qwen2.5-VL's "You are a
    helpful assistant.")."""

    def lit(s: str) -> str:
        return "{{ " + repr(s) + " }}"

    default = (
        "{% if messages[0]['role'] != 'system' %}" + lit(system + default_system + end_user) + "{% endif %}"
        if system and default_system
        else ""
    )
    system_turn = "{% elif m['role'] == 'system' %}" + lit(system) if system else ""
    return (
        lit(bos)
        + default
        + "{% for m in messages %}"
        + "{% if m['role'] == 'assistant' %}"
        + lit(assistant)
        + system_turn
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


def _turns(bos: str, user: str, assistant: str, end: str, gen: str, image: str) -> str:
    """`_template` for the layouts whose user and assistant turns end alike."""
    return _template(
        bos=bos, user=user, assistant=assistant, end_user=end, end_assistant=end, gen=gen, image=image
    )


def _chatml(image: str, default_system: str | None = None) -> str:
    """The ChatML layout of Qwen-VL and InternVL, with the given image placeholder and default system prompt."""
    start, end = "<|im_start|>assistant\n", "<|im_end|>\n"
    return _template(
        bos="",
        user="<|im_start|>user\n",
        assistant=start,
        end_user=end,
        end_assistant=end,
        gen=start,
        image=image,
        system="<|im_start|>system\n",
        default_system=default_system,
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
_IDEFICS_TEMPLATE = _turns(
    "<|im_start|>", "User:", "Assistant: ", "<end_of_utterance>\n", "Assistant:", "<image>"
)
_GEMMA_TEMPLATE = _turns(
    "<bos>",
    "<start_of_turn>user\n",
    "<start_of_turn>model\n",
    "<end_of_turn>\n",
    "<start_of_turn>model\n",
    "<start_of_image>",
)


@dataclass(frozen=True)
class TokenRoles:
    """A family's special-token roles and chat template (None: no template, like PaliGemma's checkpoints)."""

    bos: str | None
    eos: str
    pad: str
    unk: str | None
    chat_template: str | None
    extra: dict[str, str] = field(default_factory=dict)
    adds_bos: bool = False  # the tokenizer prepends BOS (Llama's, for LLaVA, whose template writes none)


def _chatml_roles(image: str, default_system: str | None = None, **extra: str) -> TokenRoles:
    """ChatML families (Qwen-VL, InternVL): no BOS, `<|im_end|>` ends a turn; `extra` names special tokens."""
    return TokenRoles(None, "<|im_end|>", "<|endoftext|>", None, _chatml(image, default_system), extra)


def _bos_roles(bos: str, eos: str, chat_template: str | None, extra: dict[str, str]) -> TokenRoles:
    """Families with a BOS, `<pad>` and `<unk>`; `extra` names the special tokens their processor reads."""
    return TokenRoles(bos, eos, "<pad>", "<unk>", chat_template, extra)


_QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
_QWEN_EXTRA = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
# Qwen2-VL and Qwen2.5-VL add a system prompt when the conversation has none; Qwen3-VL does not.
_QWEN_TOKENS = _chatml_roles(_QWEN_IMAGE, "You are a helpful assistant.", **_QWEN_EXTRA)
_QWEN3_TOKENS = _chatml_roles(_QWEN_IMAGE, **_QWEN_EXTRA)
_INTERNVL_TOKENS = _chatml_roles(
    "<IMG_CONTEXT>\n",
    start_image_token="<img>",
    end_image_token="</img>",
    context_image_token="<IMG_CONTEXT>",
    video_token="<video>",
)
_LLAVA_TOKENS = replace(_bos_roles("<s>", "</s>", _LLAVA_TEMPLATE, {"image_token": "<image>"}), adds_bos=True)
_IDEFICS_TOKENS = _bos_roles(
    "<|im_start|>",
    "<end_of_utterance>",
    _IDEFICS_TEMPLATE,
    {
        "image_token": "<image>",
        "fake_image_token": "<fake_token_around_image>",
        "global_image_token": "<global-img>",
        "end_of_utterance_token": "<end_of_utterance>",
    },
)
_PALIGEMMA_TOKENS = _bos_roles("<bos>", "<eos>", None, {"image_token": "<image>"})
_GEMMA_TOKENS = _bos_roles(
    "<bos>",
    "<eos>",
    _GEMMA_TEMPLATE,
    {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"},
)


def build_tokenizer(arch: str, vocab_size: int = 640):
    """A fresh `PreTrainedTokenizerFast` for `arch` (the BPE itself is trained once per process)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    roles = _entry(arch).tokens
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json(vocab_size)),
        model_max_length=4096,
        padding_side="right",
        bos_token=roles.bos,
        eos_token=roles.eos,
        pad_token=roles.pad,
        unk_token=roles.unk,
        extra_special_tokens=dict(roles.extra),
        add_bos_token=roles.adds_bos,
    )
    if roles.chat_template is not None:
        tok.chat_template = roles.chat_template
    return tok


def _merge(base: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _square(side: int) -> dict[str, int]:
    """An image processor `size` of `side`×`side` pixels."""
    return {"height": side, "width": side}


@dataclass(frozen=True)
class TinySpec:
    """What one tiny build is asked for: the architecture, its tokenizer, the sizes and the overrides.

    A builder in `TINY_BUILDERS` reads it and returns `(config, processor)`; its methods give the pieces
    every family shares (a Llama-style text config, a ViT-style vision config, the config with the
    caller's overrides merged in, a processor around the tokenizer and its chat template).
    """

    arch: str
    tok: Any
    image_size: int
    patch_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    vision_hidden_size: int
    vision_layers: int
    text_config: dict[str, Any] | None = None
    vision_config: dict[str, Any] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> int:
        """Patches along one side of the image."""
        return self.image_size // self.patch_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def token_id(self, token: str) -> int:
        return self.tok.convert_tokens_to_ids(token)

    def text(self, **extra: Any) -> dict[str, Any]:
        """A Llama-style text config (tied embeddings, half as many KV heads), updated with `extra`."""
        heads, tok = self.num_heads, self.tok
        base = dict(
            vocab_size=len(tok),
            hidden_size=self.hidden_size,
            intermediate_size=self.hidden_size * 2,
            num_hidden_layers=self.num_layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            head_dim=self.head_dim,
            max_position_embeddings=4096,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=True,
        )
        return dict(base, **extra)

    def vision(self, **extra: Any) -> dict[str, Any]:
        """A ViT-style vision config (two heads, MLP twice the width), updated with `extra`."""
        vh = self.vision_hidden_size
        base = dict(
            hidden_size=vh,
            intermediate_size=vh * 2,
            num_hidden_layers=self.vision_layers,
            num_attention_heads=2,
            image_size=self.image_size,
            patch_size=self.patch_size,
        )
        return dict(base, **extra)

    def config(self, cls_name: str, text: dict[str, Any], vision: dict[str, Any], **top: Any) -> Any:
        """`transformers.<cls_name>` with the caller's text/vision/top-level overrides merged in."""
        import transformers as tf

        return getattr(tf, cls_name)(
            text_config=_merge(text, self.text_config),
            vision_config=_merge(vision, self.vision_config),
            **_merge(top, self.overrides),
        )

    def processor(self, cls_name: str, image_processor: Any, **kwargs: Any) -> Any:
        """`transformers.<cls_name>` around `image_processor` and the tokenizer (and its chat template)."""
        import transformers as tf

        if self.tok.chat_template is not None:
            kwargs["chat_template"] = self.tok.chat_template
        return getattr(tf, cls_name)(image_processor=image_processor, tokenizer=self.tok, **kwargs)


# Qwen-VL variants: config, processor and video processor classes.
_QWEN_CLASSES = {
    "qwen2_vl": ("Qwen2VLConfig", "Qwen2VLProcessor", "Qwen2VLVideoProcessor"),
    "qwen2_5_vl": ("Qwen2_5_VLConfig", "Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor"),
    "qwen3_vl": ("Qwen3VLConfig", "Qwen3VLProcessor", "Qwen3VLVideoProcessor"),
}


def _qwen_vision(s: TinySpec) -> dict[str, Any]:
    vh, depth = s.vision_hidden_size, s.vision_layers
    common = dict(
        depth=depth, num_heads=2, patch_size=s.patch_size, spatial_merge_size=2, temporal_patch_size=2
    )
    if s.arch == "qwen2_vl":
        return dict(common, embed_dim=vh, hidden_size=s.hidden_size, mlp_ratio=2)
    newer = dict(common, hidden_size=vh, intermediate_size=vh * 2, out_hidden_size=s.hidden_size)
    if s.arch == "qwen2_5_vl":
        return dict(newer, window_size=s.patch_size * 4, fullatt_block_indexes=[depth - 1])
    return dict(newer, num_position_embeddings=s.grid * s.grid, deepstack_visual_indexes=[depth - 1])


def _qwen(s: TinySpec) -> tuple[Any, Any]:
    """Qwen2-VL, Qwen2.5-VL, Qwen3-VL: M-RoPE sections summing to head_dim/2, image size fixed by pixels."""
    import transformers as tf

    cfg_cls, proc_cls, video_cls = _QWEN_CLASSES[s.arch]
    quarter = s.head_dim // 2
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    rope["mrope_section"] = [quarter - 2 * (quarter // 3), quarter // 3, quarter // 3]
    if s.arch == "qwen3_vl":
        rope["mrope_interleaved"] = True
    config = s.config(
        cfg_cls,
        s.text(rope_parameters=rope),
        _qwen_vision(s),
        image_token_id=s.token_id("<|image_pad|>"),
        video_token_id=s.token_id("<|video_pad|>"),
        vision_start_token_id=s.token_id("<|vision_start|>"),
        vision_end_token_id=s.token_id("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    pixels = s.image_size * s.image_size
    ip_kwargs = dict(
        patch_size=s.patch_size,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": pixels, "longest_edge": pixels},
    )
    video = getattr(tf, video_cls)(**ip_kwargs)
    processor = s.processor(proc_cls, tf.Qwen2VLImageProcessor(**ip_kwargs), video_processor=video)
    return config, processor


def _llava(s: TinySpec) -> tuple[Any, Any]:
    """LLaVA with a CLIP vision tower (one class token: the "default" strategy drops it) and Llama text."""
    import transformers as tf

    config = s.config(
        "LlavaConfig",
        s.text(model_type="llama"),
        s.vision(projection_dim=s.vision_hidden_size, model_type="clip_vision_model"),
        image_token_index=s.token_id("<image>"),
        image_seq_length=s.grid * s.grid,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        tie_word_embeddings=True,
    )
    size = s.image_size
    image_processor = tf.CLIPImageProcessor(size={"shortest_edge": size}, crop_size=_square(size))
    processor = s.processor(
        "LlavaProcessor",
        image_processor,
        patch_size=s.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return config, processor


def _idefics3(s: TinySpec) -> tuple[Any, Any]:
    """Idefics3 and SmolVLM: pixel shuffle by 2, so `image_seq_len` is (image/patch)²/4; no image splitting."""
    import transformers as tf

    name = "Idefics3" if s.arch == "idefics3" else "SmolVLM"
    scale = 2
    config = s.config(
        f"{name}Config",
        s.text(model_type="llama"),
        s.vision(),
        image_token_id=s.token_id("<image>"),
        scale_factor=scale,
        pad_token_id=s.tok.pad_token_id,
        tie_word_embeddings=True,
    )
    ip_kwargs = dict(
        size={"longest_edge": s.image_size},
        max_image_size={"longest_edge": s.image_size},
        do_image_splitting=False,
    )
    video = {"video_processor": tf.SmolVLMVideoProcessor(**ip_kwargs)} if name == "SmolVLM" else {}
    image_processor = getattr(tf, f"{name}ImageProcessor")(**ip_kwargs)
    seq_len = (s.grid * s.grid) // (scale * scale)
    processor = s.processor(f"{name}Processor", image_processor, image_seq_len=seq_len, **video)
    return config, processor


def _paligemma(s: TinySpec) -> tuple[Any, Any]:
    """PaliGemma: the processor adds its <loc>/<seg> tokens when built, so the vocabulary is read after it."""
    import transformers as tf

    image_processor = tf.SiglipImageProcessor(size=_square(s.image_size))
    image_processor.image_seq_length = s.grid * s.grid
    processor = s.processor("PaliGemmaProcessor", image_processor)
    vocab = len(processor.tokenizer)
    config = s.config(
        "PaliGemmaConfig",
        s.text(model_type="gemma", vocab_size=vocab, num_image_tokens=s.grid * s.grid),
        s.vision(projection_dim=s.hidden_size, vision_use_head=False, model_type="siglip_vision_model"),
        image_token_index=s.token_id("<image>"),
        vocab_size=vocab,
        projection_dim=s.hidden_size,
        hidden_size=s.hidden_size,
    )
    return config, processor


def _gemma3(s: TinySpec) -> tuple[Any, Any]:
    """Gemma 3: a SigLIP tower pooled to a square number of image tokens between begin/end-of-image."""
    import transformers as tf

    mm_tokens = max(1, s.grid // 2) ** 2
    config = s.config(
        "Gemma3Config",
        s.text(sliding_window=512, query_pre_attn_scalar=s.head_dim),
        s.vision(vision_use_head=False, model_type="siglip_vision_model"),
        mm_tokens_per_image=mm_tokens,
        boi_token_index=s.token_id("<start_of_image>"),
        eoi_token_index=s.token_id("<end_of_image>"),
        image_token_index=s.token_id("<image_soft_token>"),
        tie_word_embeddings=True,
    )
    image_processor = tf.Gemma3ImageProcessor(size=_square(s.image_size), do_pan_and_scan=False)
    processor = s.processor("Gemma3Processor", image_processor, image_seq_length=mm_tokens)
    return config, processor


def _internvl(s: TinySpec) -> tuple[Any, Any]:
    """InternVL: one tile (no cropping into patches), pixel shuffle with downsample_ratio 0.5, Qwen2 text."""
    import transformers as tf

    seq_len = (s.grid * s.grid) // 4
    size, patch = s.image_size, s.patch_size
    config = s.config(
        "InternVLConfig",
        s.text(model_type="qwen2"),
        s.vision(image_size=[size, size], patch_size=[patch, patch]),
        image_token_id=s.token_id("<IMG_CONTEXT>"),
        image_seq_length=seq_len,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        tie_word_embeddings=True,
    )
    image_processor = tf.GotOcr2ImageProcessor(size=_square(size), crop_to_patches=False, max_patches=1)
    video = tf.InternVLVideoProcessor(size=_square(size))
    processor = s.processor(
        "InternVLProcessor", image_processor, video_processor=video, image_seq_length=seq_len
    )
    return config, processor


@dataclass(frozen=True)
class TinyBuilder:
    """One architecture's tokenizer roles and its builder `TinySpec -> (config, processor)`."""

    tokens: TokenRoles
    build: Callable[[TinySpec], tuple[Any, Any]]


# The tiny architectures, as segment-anything's `sam_model_registry`: name -> builder.
TINY_BUILDERS: dict[str, TinyBuilder] = {
    "qwen2_vl": TinyBuilder(_QWEN_TOKENS, _qwen),
    "qwen2_5_vl": TinyBuilder(_QWEN_TOKENS, _qwen),
    "qwen3_vl": TinyBuilder(_QWEN3_TOKENS, _qwen),
    "llava": TinyBuilder(_LLAVA_TOKENS, _llava),
    "idefics3": TinyBuilder(_IDEFICS_TOKENS, _idefics3),
    "smolvlm": TinyBuilder(_IDEFICS_TOKENS, _idefics3),
    "paligemma": TinyBuilder(_PALIGEMMA_TOKENS, _paligemma),
    "gemma3": TinyBuilder(_GEMMA_TOKENS, _gemma3),
    "internvl": TinyBuilder(_INTERNVL_TOKENS, _internvl),
}
ARCHS: tuple[str, ...] = tuple(TINY_BUILDERS)


def _entry(arch: str) -> TinyBuilder:
    if arch not in TINY_BUILDERS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    return TINY_BUILDERS[arch]


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
    visible: str | None = None,
    **overrides: Any,
):
    """The model config and the processor of a tiny `arch` model (no weights: build them with `from_config`).

    `image_size` must be a multiple of `2 * patch_size`. `text_config` / `vision_config` entries and any
    other keyword (top-level config fields) override the tiny defaults; sizes can be raised to real ones
    (bench/gpu_train.py builds a Qwen2.5-VL-3B shape this way). The processor shows the whole image as a
    loaded one does (`models.preprocess.make_visible(processor, visible)`; the stock tiny LLaVA, like
    llava-hf's, center-crops, which `visible="crop"` keeps).
    """
    from text4seg.models.preprocess import make_visible

    entry = _entry(arch)
    if image_size % (2 * patch_size):
        raise ValueError(f"image_size {image_size} must be a multiple of 2 * patch_size ({2 * patch_size})")
    spec = TinySpec(
        arch=arch,
        tok=build_tokenizer(arch, vocab_size),
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        vision_hidden_size=vision_hidden_size,
        vision_layers=vision_layers,
        text_config=text_config,
        vision_config=vision_config,
        overrides=overrides,
    )
    config, processor = entry.build(spec)
    return config, make_visible(processor, visible)


def count_parameters(model) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen = {id(p): p.numel() for p in model.parameters()}
    return sum(seen.values())
