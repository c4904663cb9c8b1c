"""The registry of architecture facts: what text4seg must know about a model type beyond the Auto classes.

`ARCH_FACTS` is a table keyed by `config.model_type` of frozen `ArchFacts` entries, and `arch_facts(x)` looks
up a model (wrapped by PEFT, DDP or Accelerate, or not), a config or a model type: a type not in the table
gets the generic entry (or, with `strict=True`, an `UnknownArchitectureError`). Every fact has a generic
default; an entry names only where its type differs. A new kind of fact (for example preprocessing that
hides pixels, such as a center crop) is a new `ArchFacts` field with a generic default.

The facts a processor carries itself are read from it, the same way for every type:

- `render_prompt`: the user turn as text, ending where the model starts answering (chat template with
  `add_generation_prompt=True`; without a template, as PaliGemma's checkpoints, the image tokens and the
  question, and the processor adds `<bos>` and the newline itself);
- `end_of_turn`: the token that closes an assistant turn, found by rendering a sample conversation, with
  the tokenizer's EOS as fallback (LLaVA-1.5's template ends a turn with a space only);
- `stop_token_ids`: the ids that end generation (end of turn, the generation config's EOS, the tokenizer's);
- `find_parts`: the language model, the vision tower and the projector, found from the module structure
  with the entry's name hints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from text4seg.models.unwrap import unwrap_model

# Name hints for modules that map vision features into the language model (inside or beside the tower).
_PROJECTOR_HINTS = ("merger", "projector", "connector", "mm_projector", "multi_modal_projector", "deepstack")
_VISION_HINTS = ("visual", "vision_tower", "vision_model", "vision_encoder", "image_encoder")
_SENTINEL = "\x00ANSWER\x00"

PromptLayout = Literal["chat_template", "image_tokens_then_text"]


@dataclass(frozen=True)
class ArchFacts:
    """What text4seg knows about one `config.model_type`; the defaults are the generic facts.

    - `prompt_layout`: how the type's released checkpoints lay out a prompt: through their chat template
      (which places the image tokens), or, with no template, the processor's image token once per image
      followed by the question (`render_prompt` follows the processor it is given; this records what to
      expect of the type's checkpoints);
    - `answer_token_type`: the `token_type_ids` value of answer tokens (1 where a prefix-LM marks the
      trained suffix with it);
    - `vision_hints`, `projector_hints`: module-name fragments that `find_parts` reads as the vision tower
      and as the projector mapping vision features into the language model.
    """

    model_type: str
    prompt_layout: PromptLayout = "chat_template"
    answer_token_type: int = 0
    vision_hints: tuple[str, ...] = _VISION_HINTS
    projector_hints: tuple[str, ...] = _PROJECTOR_HINTS


GENERIC = ArchFacts(model_type="")

# The model types text4seg builds and tests (offline, in `text4seg.models.tiny`); the others get GENERIC.
ARCH_FACTS: dict[str, ArchFacts] = {
    facts.model_type: facts
    for facts in (
        ArchFacts("qwen2_vl"),
        ArchFacts("qwen2_5_vl"),
        ArchFacts("qwen3_vl"),
        ArchFacts("llava"),
        ArchFacts("idefics3"),
        ArchFacts("smolvlm"),
        # No chat template; prefix-LM attention: `token_type_ids` mark the trained suffix with 1.
        ArchFacts("paligemma", prompt_layout="image_tokens_then_text", answer_token_type=1),
        ArchFacts("gemma3"),
        ArchFacts("internvl"),
    )
}


class UnknownArchitectureError(LookupError):
    """A strict look-up of a model type that `ARCH_FACTS` does not hold."""


def model_type(model_or_config: Any) -> str:
    """`config.model_type` of a model (PEFT-, DDP- or Accelerate-wrapped or not) or of a config."""
    target = unwrap_model(model_or_config)
    config = getattr(target, "config", target)
    return str(getattr(config, "model_type", ""))


def arch_facts(model_or_type: Any, *, strict: bool = False) -> ArchFacts:
    """The `ArchFacts` of a model, a config or a model type (a string).

    A type not in `ARCH_FACTS` gets the generic facts under its own name, or with `strict` raises
    `UnknownArchitectureError` naming the registered types.
    """
    kind = model_or_type if isinstance(model_or_type, str) else model_type(model_or_type)
    facts = ARCH_FACTS.get(kind)
    if facts is not None:
        return facts
    if strict:
        raise UnknownArchitectureError(
            f"no architecture facts registered for model type {kind!r}; registered: {', '.join(ARCH_FACTS)}"
        )
    return replace(GENERIC, model_type=kind)


def answer_token_type(model_or_config: Any) -> int:
    """Value of `token_type_ids` on answer tokens (1 for PaliGemma's suffix, else 0)."""
    return arch_facts(model_or_config).answer_token_type


def tokenizer_of(processor: Any) -> Any:
    """The tokenizer inside a processor (or the tokenizer itself)."""
    return getattr(processor, "tokenizer", processor)


def has_chat_template(processor: Any) -> bool:
    return bool(
        getattr(processor, "chat_template", None) or getattr(tokenizer_of(processor), "chat_template", None)
    )


def _image_token(processor: Any) -> str:
    tok = tokenizer_of(processor)
    return str(getattr(processor, "image_token", None) or getattr(tok, "image_token", None) or "<image>")


def _apply_template(processor: Any, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    target = processor if getattr(processor, "chat_template", None) else tokenizer_of(processor)
    return target.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)


def user_messages(question: str, n_images: int = 1) -> list[dict[str, Any]]:
    """A one-turn user conversation in the multimodal chat format (images first, then the question)."""
    content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question}]
    return [{"role": "user", "content": content}]


def render_prompt(processor: Any, messages: list[dict[str, Any]] | str, n_images: int = 1) -> str:
    """Text of the prompt up to where the assistant answer starts (pass to the processor with the images).

    `messages` is a list of chat turns without the final assistant answer, or a bare question.
    """
    if isinstance(messages, str):
        messages = user_messages(messages, n_images)
    if has_chat_template(processor):
        return _apply_template(processor, messages, add_generation_prompt=True)
    # No template (PaliGemma): image tokens first, then the text of the turns; the processor adds <bos> and "\n".
    texts = []
    for turn in messages:
        content = turn["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(c["text"] for c in content if c.get("type") == "text")
    return _image_token(processor) * n_images + "\n".join(texts)


def add_special_tokens_for(processor: Any, prompt: str) -> bool:
    """Whether the processor should add the tokenizer's special tokens: not when the prompt already has BOS."""
    if not has_chat_template(processor):
        return False
    bos = getattr(tokenizer_of(processor), "bos_token", None)
    return not (bos and prompt.startswith(bos))


def end_of_turn(processor: Any) -> str:
    """The token string that ends an assistant turn (appended to every trained answer, a stop token at inference)."""
    tok = tokenizer_of(processor)
    eos = getattr(tok, "eos_token", None)
    if has_chat_template(processor):
        convo = user_messages("q", 0) + [
            {"role": "assistant", "content": [{"type": "text", "text": _SENTINEL}]}
        ]
        try:
            rendered = _apply_template(processor, convo, add_generation_prompt=False)
        except Exception:  # a template that refuses this shape: fall back to EOS
            rendered = ""
        tail = rendered.split(_SENTINEL, 1)[1] if _SENTINEL in rendered else ""
        specials = sorted(
            set(getattr(tok, "all_special_tokens", [])) | set(getattr(tok, "added_tokens_encoder", {})),
            key=len,
            reverse=True,
        )
        stripped = tail.lstrip()
        for special in specials:
            if special and stripped.startswith(special):
                return special
    if not eos:
        raise ValueError(
            "cannot find the end-of-turn token: no chat template marks it and the tokenizer has no EOS"
        )
    return str(eos)


def stop_token_ids(processor_or_tokenizer: Any, model: Any = None) -> list[int]:
    """Token ids that should stop generation, deduplicated in this order: the end-of-turn token, the EOS
    ids of `model`'s generation config (`model` may also be a `GenerationConfig`), the tokenizer's EOS.

    Raises ValueError when there is none of them.
    """
    tok = tokenizer_of(processor_or_tokenizer)
    ids: list[int] = []
    try:
        ids.append(int(tok.convert_tokens_to_ids(end_of_turn(processor_or_tokenizer))))
    except ValueError:  # neither a template's end of turn nor a tokenizer EOS: the config may name one
        pass
    generation = None if model is None else getattr(unwrap_model(model), "generation_config", model)
    ids += _as_ids(getattr(generation, "eos_token_id", None)) + _as_ids(getattr(tok, "eos_token_id", None))
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise ValueError(
            "no stop token: no chat template marks the end of a turn, and neither the generation config "
            "nor the tokenizer names an EOS"
        )
    return ids


def _as_ids(value: Any) -> list[int]:
    """An `eos_token_id` setting (None, one id or a list of ids) as a list."""
    if value is None:
        return []
    return [int(value)] if isinstance(value, int) else [int(i) for i in value]


def end_of_turn_ids(processor: Any) -> list[int]:
    """`stop_token_ids(processor)`: the end-of-turn token and the tokenizer's EOS (kept for its callers)."""
    return stop_token_ids(processor)


@dataclass(frozen=True)
class ModelParts:
    """Module names (as in `model.named_modules()`) of the three parts of an image-text-to-text model."""

    language_model: str
    vision_tower: list[str] = field(default_factory=list)
    projector: list[str] = field(default_factory=list)
    lm_head: str | None = None

    def lora_target_regex(self, model: Any) -> str:
        """A PEFT `target_modules` regex matching every Linear of the language model (nothing else)."""
        import torch

        prefix = self.language_model + "." if self.language_model else ""
        leaves = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, mod in model.named_modules()
                if isinstance(mod, torch.nn.Linear) and name.startswith(prefix) and name != self.lm_head
            }
            - ({self.lm_head.rsplit(".", 1)[-1]} if self.lm_head else set())
        )
        if not leaves:
            raise ValueError(f"no Linear layers under the language model {self.language_model!r}")
        alternatives = "|".join(re.escape(leaf) for leaf in leaves)
        return rf"^{re.escape(self.language_model)}\..*\.({alternatives})$"


def find_parts(model: Any) -> ModelParts:
    """Locate the language model, vision tower and projector from the structure of `model`.

    The language model is the module owning the input embedding (`embed_tokens`); the vision tower is a
    sibling holding a vision config or named like one; the projector is any other sibling (LLaVA's
    `multi_modal_projector`, Idefics3's `connector`), plus modules inside the tower that map into the
    text hidden size (Qwen-VL's `merger`, Qwen3-VL's deepstack mergers). Names are those of the
    unwrapped model (`unwrap_model`).
    """
    facts = arch_facts(model)
    model = unwrap_model(model)
    embeddings = model.get_input_embeddings()
    names = dict(model.named_modules())
    lm_name = next(
        (name for name, mod in names.items() if name and any(c is embeddings for c in mod.children())), None
    )
    if lm_name is None:
        raise ValueError(
            f"cannot find the language model of {type(model).__name__}: no module owns the embeddings"
        )
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    lm_head = next((name for name, mod in names.items() if out_emb is not None and mod is out_emb), None)
    # Older layouts nest the decoder one level deeper (language_model.model.embed_tokens): climb until the
    # language model has siblings (the vision side).
    while "." in lm_name and not _siblings(names, lm_name, lm_head):
        lm_name = lm_name.rsplit(".", 1)[0]
    vision, projector = [], []
    for sib in _siblings(names, lm_name, lm_head):
        leaf = sib.rsplit(".", 1)[-1]
        is_tower = hasattr(names[sib], "config") or any(h in leaf for h in facts.vision_hints)
        if is_tower and not any(h in leaf for h in facts.projector_hints):
            vision.append(sib)
        else:
            projector.append(sib)
    text_hidden = int(embeddings.embedding_dim)
    for tower in vision:
        projector += _projectors_in_tower(names, tower, text_hidden, facts.projector_hints)
    return ModelParts(language_model=lm_name, vision_tower=vision, projector=projector, lm_head=lm_head)


def _siblings(names: dict[str, Any], name: str, lm_head: str | None) -> list[str]:
    """The modules beside `name` (same parent) that hold parameters, other than `name` and the LM head."""
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    out = [f"{parent}.{n}" if parent else n for n, _ in names[parent].named_children()]
    return [x for x in out if x not in (name, lm_head) and any(True for _ in names[x].parameters())]


def _projectors_in_tower(
    names: dict[str, Any], tower: str, text_hidden: int, hints: tuple[str, ...]
) -> list[str]:
    """Projector modules living inside a tower: a direct child whose name hints so, or whose last Linear
    maps into the text hidden size while the tower works at another width."""
    import torch

    found = []
    tower_width = getattr(getattr(names[tower], "config", None), "hidden_size", None)
    for child_name, child in names[tower].named_children():
        linears = [m for m in child.modules() if isinstance(m, torch.nn.Linear)]
        maps_to_text = bool(linears) and linears[-1].out_features == text_hidden
        if any(h in child_name for h in hints) or (
            maps_to_text
            and tower_width not in (None, text_hidden)
            and not isinstance(child, torch.nn.ModuleList)
        ):
            found.append(f"{tower}.{child_name}")
    return found


def in_parts(name: str, prefixes: list[str]) -> bool:
    """Whether parameter/module `name` lies under one of the module `prefixes`."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)
