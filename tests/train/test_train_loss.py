"""The answer-only loss equals each architecture's own loss, with logits kept for answer positions only."""

from __future__ import annotations

import pytest
import torch

from text4seg.models import registry
from text4seg.models.tiny import ARCHS, build_tiny
from text4seg.train.collate import Collator
from text4seg.train.loss import answer_loss, keeps_logits


def _batch(arch, records):
    model, processor = build_tiny(arch)
    collator = Collator(processor, max_length=1024, answer_token_type=registry.answer_token_type(model))
    batch = collator(records[:3])
    batch.pop("skipped", None)
    batch.pop("ids", None)
    return model, batch


@pytest.mark.parametrize("arch", ARCHS)
def test_answer_loss_matches_the_models_own_loss(arch, records):
    model, batch = _batch(arch, records)
    model.eval()  # no dropout: both forwards must see the same network
    assert keeps_logits(model)
    own = model(**batch).loss
    mine = answer_loss(model, batch)
    assert torch.allclose(mine, own, rtol=1e-5, atol=1e-6), (float(mine), float(own))
    assert torch.equal(answer_loss(model, batch, keep_logits=False), own)


def test_answer_loss_gradients_match_and_logits_are_cut(records, monkeypatch):
    model, batch = _batch("qwen2_vl", records)
    model.eval()
    model(**batch).loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    seen = []
    forward = model.forward

    def spy(*args, **kwargs):
        out = forward(*args, **kwargs)
        seen.append(out.logits.shape[1])
        return out

    monkeypatch.setattr(model, "forward", spy)
    answer_loss(model, batch).backward()
    first = int((batch["labels"] != -100).any(0).nonzero()[0])
    assert seen == [batch["labels"].shape[1] - first + 1] and seen[0] < batch["labels"].shape[1]
    for name, grad in expected.items():
        assert torch.allclose(model.get_parameter(name).grad, grad, rtol=1e-4, atol=1e-6), name


def test_keeps_logits_sees_through_peft_and_refuses_plain_modules():
    from peft import LoraConfig, get_peft_model

    model, _ = build_tiny("qwen2_vl")
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert keeps_logits(wrapped)
    assert not keeps_logits(torch.nn.Linear(2, 2))
