"""The one place for architecture-specific facts.

Everything else in text4seg (collator, trainer, segmenter) stays generic and asks this module:

- `render_prompt`: the user turn as text, ending where the model starts answering (chat template with
  `add_generation_prompt=True`; PaliGemma, which has no template, gets `<image>…` + question and its
  processor adds `<bos>` and the newline itself);
- `end_of_turn`: the token that closes an assistant turn, found by rendering a sample conversation, with
  the tokenizer's EOS as fallback (LLaVA-1.5's template ends a turn with a space only);
- `answer_token_type`: the `token_type_ids` value of answer tokens (PaliGemma's prefix-LM marks the suffix 1);
- `find_parts`: the language model, the vision tower and the projector, found from the module structure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Model types whose `token_type_ids` mark the trained suffix (prefix-LM attention) with 1.
_SUFFIX_TOKEN_TYPE = {"paligemma": 1}
# Name hints for modules that map vision features into the language model (inside or beside the tower).
_PROJECTOR_HINTS = ("merger", "projector", "connector", "mm_projector", "multi_modal_projector", "deepstack")
_VISION_HINTS = ("visual", "vision_tower", "vision_model", "vision_encoder", "image_encoder")
_SENTINEL = "\x00ANSWER\x00"


def model_type(model_or_config: Any) -> str:
    """`config.model_type` of a model (PEFT-wrapped or not) or of a config."""
    config = getattr(model_or_config, "config", model_or_config)
    return str(getattr(config, "model_type", ""))


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


def end_of_turn_ids(processor: Any) -> list[int]:
    """Token ids that should stop generation: the end-of-turn token and EOS (deduplicated)."""
    tok = tokenizer_of(processor)
    ids = [tok.convert_tokens_to_ids(end_of_turn(processor))]
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    return ids


def answer_token_type(model_or_config: Any) -> int:
    """Value of `token_type_ids` on answer tokens (1 for PaliGemma's suffix, else 0)."""
    return _SUFFIX_TOKEN_TYPE.get(model_type(model_or_config), 0)


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


def _unwrap(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (named_modules of the result match the base model)."""
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def find_parts(model: Any) -> ModelParts:
    """Locate the language model, vision tower and projector from the structure of `model`.

    The language model is the module owning the input embedding (`embed_tokens`); the vision tower is a
    sibling holding a vision config or named like one; the projector is any other sibling (LLaVA's
    `multi_modal_projector`, Idefics3's `connector`), plus modules inside the tower that map into the
    text hidden size (Qwen-VL's `merger`, Qwen3-VL's deepstack mergers).
    """
    import torch

    model = _unwrap(model)
    embeddings = model.get_input_embeddings()
    names = dict(model.named_modules())
    lm_name = None
    for name, mod in names.items():
        if name and any(child is embeddings for child in mod.children()):
            lm_name = name
            break
    if lm_name is None:
        raise ValueError(
            f"cannot find the language model of {type(model).__name__}: no module owns the embeddings"
        )
    lm_head = None
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, mod in names.items():
        if out_emb is not None and mod is out_emb:
            lm_head = name

    def siblings_of(name: str) -> list[str]:
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        out = [f"{parent}.{n}" if parent else n for n, _ in names[parent].named_children()]
        return [x for x in out if x not in (name, lm_head) and any(True for _ in names[x].parameters())]

    # Older layouts nest the decoder one level deeper (language_model.model.embed_tokens): climb until the
    # language model has siblings (the vision side).
    while "." in lm_name and not siblings_of(lm_name):
        lm_name = lm_name.rsplit(".", 1)[0]
    siblings = siblings_of(lm_name)
    text_hidden = int(embeddings.embedding_dim)

    vision, projector = [], []
    for sib in siblings:
        mod = names[sib]
        leaf = sib.rsplit(".", 1)[-1]
        is_tower = hasattr(mod, "config") or any(h in leaf for h in _VISION_HINTS)
        if is_tower and not any(h in leaf for h in _PROJECTOR_HINTS):
            vision.append(sib)
        else:
            projector.append(sib)
    # Projector modules living inside a tower: a direct child whose name hints so, or whose last Linear maps
    # into the text hidden size while the tower works at another width.
    for tower in list(vision):
        for child_name, child in names[tower].named_children():
            full = f"{tower}.{child_name}"
            linears = [m for m in child.modules() if isinstance(m, torch.nn.Linear)]
            maps_to_text = bool(linears) and linears[-1].out_features == text_hidden
            tower_width = getattr(getattr(names[tower], "config", None), "hidden_size", None)
            if any(h in child_name for h in _PROJECTOR_HINTS) or (
                maps_to_text
                and tower_width not in (None, text_hidden)
                and not isinstance(child, torch.nn.ModuleList)
            ):
                projector.append(full)
    return ModelParts(language_model=lm_name, vision_tower=vision, projector=projector, lm_head=lm_head)


def in_parts(name: str, prefixes: list[str]) -> bool:
    """Whether parameter/module `name` lies under one of the module `prefixes`."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)
