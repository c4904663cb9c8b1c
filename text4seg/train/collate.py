"""Chat records -> model inputs whose labels cover only the answer and its end-of-turn token.

For every record (docs/RECORDS.md: `images` + `messages`, the last message being the assistant answer):

1. the conversation without the answer is rendered with the processor's chat template and
   `add_generation_prompt=True`, and run through the processor with the images (so image tokens are
   expanded exactly as at inference);
2. the answer text plus the model's end-of-turn token is tokenised on its own and appended;
3. labels are -100 on every prompt token (image tokens included) and on padding.

Building the sequence as `prompt ids + answer ids` makes the labelled tokens exactly the answer and the
end token for every template (no boundary search).

Multi-turn records (several assistant turns, e.g. `text4seg build llava` conversations) are trained on
EVERY assistant answer: the prompt of step 1 then holds the earlier turns as the template renders them,
and each earlier answer is located by a token-level diff: the conversation up to that answer rendered with
`add_generation_prompt=True` (P) and the same text followed by the answer and its end token (R) are run
through the processor with the images they mention; R must be a prefix of the prompt ids and the tokens
after P's common prefix with R are labelled (the images are preprocessed once for all these calls:
`image_features_once`). A template whose rendering of earlier turns is not a prefix
of the later rendering is refused with `RecordError`, as is a multi-turn record for a processor without a
chat template (PaliGemma's prefix/suffix format has one question and one answer; it also needs an image
in every record). Records with one answer take exactly the one-turn path above; no record needs masks, and
text-only records may share a batch with records that have images. A record longer than `max_length` is skipped, never
truncated (cutting through image tokens breaks the model), and its id is returned in `batch["skipped"]`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from text4seg.protocol import records
from text4seg.protocol.images import ImageReadError, read_record_image
from text4seg.protocol.records import RecordError

IGNORE_INDEX = -100
# Per-token tensors produced by processors; any other 2-D (1, L) tensor is treated the same way.
_TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")


def split_record(record: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str, list[Any]]:
    """`(prompt messages, answer text, images)` of a record, its images read upright as RGB
    (`text4seg.protocol.read_record_image`, the reader inference and evaluation use)."""
    messages, answer, values = records.split_record(record)
    rid = records.record_id(record)
    try:
        images = [read_record_image(value, rid) for value in values]
    except ImageReadError as err:
        raise RecordError(str(err)) from err
    return messages, answer, images


@dataclass
class EncodedRecord:
    """One record's model inputs (tensors with batch dimension 1) and its labels."""

    id: str
    features: dict[str, Any]
    labels: list[int]

    @property
    def length(self) -> int:
        return len(self.labels)


class Collator:
    """Turns a list of records into a padded training batch (see the module docstring)."""

    def __init__(self, processor: Any, *, max_length: int = 2048, answer_token_type: int = 0) -> None:
        from text4seg.models import registry

        self.processor = processor
        self.tokenizer = registry.tokenizer_of(processor)
        self.max_length = max_length
        self.answer_token_type = answer_token_type
        self.end_token = registry.end_of_turn(processor)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.tokenizer.eos_token_id
        if self.pad_id is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token to pad with")
        self._registry = registry

    def encode(self, record: Mapping[str, Any]) -> EncodedRecord:
        """Encode one record (no length check)."""
        prompt_messages, answer, images = split_record(record)
        if not any(m.get("role") == "assistant" for m in prompt_messages):
            return self._encode(record, prompt_messages, answer, images)
        with image_features_once(self.processor):  # the earlier answers' spans re-run the processor
            return self._encode(record, prompt_messages, answer, images)

    def _encode(self, record, prompt_messages, answer, images) -> EncodedRecord:
        import torch

        if not images and not self._registry.has_chat_template(self.processor):
            raise RecordError(
                f"record {records.record_id(record)}: a text-only record cannot train a model without a chat "
                "template (PaliGemma's prompt always starts with the image)"
            )
        prompt = self._registry.render_prompt(self.processor, prompt_messages, n_images=len(images))
        kwargs: dict[str, Any] = {
            "text": [prompt],
            "return_tensors": "pt",
            "add_special_tokens": self._registry.add_special_tokens_for(self.processor, prompt),
        }
        if images:
            kwargs["images"] = [images]
        enc = dict(self.processor(**kwargs))
        enc.pop("labels", None)
        prompt_ids = enc["input_ids"]
        n_prompt = prompt_ids.shape[1]
        answer_ids = self.tokenizer(answer + self.end_token, add_special_tokens=False)["input_ids"]
        n_answer = len(answer_ids)
        features: dict[str, Any] = {}
        for key, value in enc.items():
            if not isinstance(value, torch.Tensor):
                continue
            if key in _TOKEN_KEYS or (value.dim() == 2 and value.shape == (1, n_prompt)):
                if key == "input_ids":
                    extra = torch.tensor([answer_ids], dtype=value.dtype)
                elif key == "attention_mask":
                    extra = torch.ones((1, n_answer), dtype=value.dtype)
                elif key == "token_type_ids":
                    extra = torch.full((1, n_answer), self.answer_token_type, dtype=value.dtype)
                else:
                    extra = torch.zeros((1, n_answer), dtype=value.dtype)
                features[key] = torch.cat([value, extra], dim=1)
            else:
                features[key] = value
        labels = [IGNORE_INDEX] * n_prompt + list(answer_ids)
        history = _History(self, record, prompt_messages, prompt, images, kwargs["add_special_tokens"])
        for start, stop in history.spans(prompt_ids[0].tolist()):
            labels[start:stop] = prompt_ids[0, start:stop].tolist()
        return EncodedRecord(id=str(record.get("id", "?")), features=features, labels=labels)

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        encoded, skipped = [], []
        for record in records:
            item = self.encode(record)
            if item.length > self.max_length:
                skipped.append(item.id)
            else:
                encoded.append(item)
        batch = pad_batch(encoded, pad_id=self.pad_id) if encoded else {}
        batch["skipped"] = skipped
        batch["ids"] = [e.id for e in encoded]
        return batch


class _OnceImageProcessor:
    """Stands in for a processor's image processor: runs it once per distinct (images, options), then
    hands out shallow copies of that result (a processor may pop keys from it); every other attribute is
    the wrapped processor's."""

    def __init__(self, inner: Any) -> None:
        self._inner, self._results = inner, {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import copy

        key = _call_key(args, kwargs)
        if key is None:
            return self._inner(*args, **kwargs)
        if key not in self._results:
            self._results[key] = self._inner(*args, **kwargs)
        return copy.copy(self._results[key])


def _call_key(args: tuple, kwargs: dict) -> Any:
    """A hashable key of an image processor call: the images by identity (they live as long as the record
    being encoded, and so as long as the cache), the options by value; None when an option is unhashable."""

    def identity(value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(identity(v) for v in value)
        return ("id", id(value))

    try:
        options = tuple(sorted((k, v) for k, v in kwargs.items() if k != "images"))
        hash(options)
    except TypeError:
        return None
    return identity(args), identity(kwargs.get("images")), options


@contextmanager
def image_features_once(processor: Any) -> Iterator[None]:
    """Within the block, `processor` preprocesses each distinct set of images once: a multi-turn record runs
    the processor once for the whole conversation and twice per earlier answer, always on its same images
    (6 turns with a 640×480 image: 9× the cost of one turn without this). Token ids are unchanged; a
    processor without an `image_processor` attribute is left as it is."""
    inner = getattr(processor, "image_processor", None)
    if inner is None or isinstance(inner, _OnceImageProcessor):
        yield
        return
    processor.image_processor = _OnceImageProcessor(inner)
    try:
        yield
    finally:
        processor.image_processor = inner


def _assistant_text(message: Mapping[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content if part.get("type", "text") == "text")


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class _History:
    """The label spans of the assistant answers before the last one (see the module docstring)."""

    def __init__(self, collator: Collator, record, messages, prompt, images, add_special_tokens) -> None:
        self.collator = collator
        self.rid = records.record_id(record)
        self.messages = messages
        self.prompt = prompt
        self.images = images
        self.add_special_tokens = add_special_tokens

    def _ids(self, text: str, n_images: int) -> list[int]:
        kwargs: dict[str, Any] = {
            "text": [text],
            "return_tensors": "pt",
            "add_special_tokens": self.add_special_tokens,
        }
        if n_images:
            kwargs["images"] = [self.images[:n_images]]
        return self.collator.processor(**kwargs)["input_ids"][0].tolist()

    def _fail(self, what: str) -> RecordError:
        return RecordError(f"record {self.rid}: cannot label every assistant turn: {what}")

    def spans(self, prompt_ids: list[int]) -> list[tuple[int, int]]:
        """`(start, stop)` token spans in ``prompt_ids`` of each earlier answer and its end token."""
        turns = [i for i, m in enumerate(self.messages) if m.get("role") == "assistant"]
        if not turns:
            return []
        registry = self.collator._registry
        if not registry.has_chat_template(self.collator.processor):
            raise self._fail(
                "the processor has no chat template (PaliGemma's prefix/suffix format holds one question "
                "and one answer); split the conversation into one-answer records"
            )
        return [self._span(turn, prompt_ids) for turn in turns]

    def _span(self, turn: int, prompt_ids: list[int]) -> tuple[int, int]:
        registry = self.collator._registry
        before = self.messages[:turn]
        rendered = registry.render_prompt(self.collator.processor, before)
        if not self.prompt.startswith(rendered):
            raise self._fail(
                f"the chat template renders the turns before assistant turn {turn} differently once later "
                "turns follow (its rendering is not a prefix of the full conversation's)"
            )
        answer = _assistant_text(self.messages[turn]) + self.collator.end_token
        rest = self.prompt[len(rendered) :]
        at = rest.find(answer)
        if at < 0 or rest[:at].strip():
            raise self._fail(
                f"the chat template does not render assistant turn {turn} as its text + end token"
            )
        n_images = records.image_placeholders(before)
        start_ids = self._ids(rendered, n_images)
        stop_ids = self._ids(rendered + rest[: at + len(answer)], n_images)
        if prompt_ids[: len(stop_ids)] != stop_ids:
            raise self._fail(f"the tokens up to assistant turn {turn}'s end are not a prefix of the prompt's")
        return _common_prefix(start_ids, stop_ids), len(stop_ids)


def pad_batch(items: Sequence[EncodedRecord], *, pad_id: int) -> dict[str, Any]:
    """Right-pad per-token tensors (labels with -100, mask with 0) and concatenate the image tensors.

    Records without images (text-only conversations) may share a batch with records that have them: image
    tensors are concatenated over the records that have them, a per-token tensor a record lacks is 0.
    """
    import torch

    length = max(item.length for item in items)
    batch: dict[str, Any] = {}
    for key in dict.fromkeys(key for item in items for key in item.features):
        having = [(i, item) for i, item in enumerate(items) if key in item.features]
        values = [item.features[key] for _, item in having]
        first, owner = values[0], having[0][1]
        per_token = first.dim() == 2 and first.shape[0] == 1 and first.shape[1] == owner.length
        if key in _TOKEN_KEYS or per_token:
            fill = pad_id if key == "input_ids" else 0
            out = torch.full((len(items), length), fill, dtype=first.dtype)
            for (i, _), v in zip(having, values, strict=True):
                out[i, : v.shape[1]] = v[0]
            batch[key] = out
        else:
            batch[key] = torch.cat(values, dim=0)
    labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
    for i, item in enumerate(items):
        labels[i, : item.length] = torch.tensor(item.labels, dtype=torch.long)
    batch["labels"] = labels
    return batch
