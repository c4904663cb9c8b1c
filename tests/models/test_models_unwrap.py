"""One unwrapper: through PEFT, DDP/Accelerate-style `.module` wrappers and torch.compile, in any nesting."""

from __future__ import annotations

import torch
from torch import nn

from text4seg.models import registry
from text4seg.models.tiny import build_tiny
from text4seg.models.unwrap import base_parameter_name, unwrap_model


class _Wrapper(nn.Module):
    """Stands for DistributedDataParallel (which needs a process group): the model sits in `.module`."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


class _Forwarding:
    """Stands for DeepSpeed's engine: `.module`, and every other attribute forwarded to it."""

    def __init__(self, module):
        self.module = module

    def __getattr__(self, name):
        return getattr(self.__dict__["module"], name)


def _peft(model):
    from peft import LoraConfig, get_peft_model

    target = registry.find_parts(model).lora_target_regex(model)
    return get_peft_model(model, LoraConfig(r=2, target_modules=target))


def test_unwrap_through_every_wrapper_and_nesting():
    model, _ = build_tiny("llava")
    assert unwrap_model(model) is model
    peft_model = _peft(model)
    wrapped = [
        peft_model,
        nn.DataParallel(peft_model),
        _Wrapper(peft_model),
        _Forwarding(peft_model),
        torch.compile(_Wrapper(peft_model)),
        _Wrapper(torch.compile(model)),
    ]
    for outer in wrapped:
        assert unwrap_model(outer) is model, type(outer).__name__
        assert registry.model_type(outer) == "llava"
    for outer in wrapped[:5]:
        assert unwrap_model(outer, keep_peft=True) is peft_model, type(outer).__name__
    # A module that is no wrapper comes back as it is.
    plain = nn.Linear(2, 2)
    assert unwrap_model(plain) is plain and unwrap_model(_Wrapper(plain)) is plain


def test_parts_of_a_wrapped_model_are_the_base_models():
    model, _ = build_tiny("qwen2_vl")
    parts = registry.find_parts(model)
    peft_model = _peft(model)
    assert registry.find_parts(_Wrapper(peft_model)) == parts
    assert registry.answer_token_type(_Wrapper(peft_model)) == 0


def test_base_parameter_name_maps_peft_names_to_the_base_model():
    model, _ = build_tiny("llava")
    base_names = {n for n, _ in model.named_parameters()}
    from peft import LoraConfig, get_peft_model

    target = registry.find_parts(model).lora_target_regex(model)
    projector = registry.find_parts(model).projector
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=target, modules_to_save=projector))
    mapped = {base_parameter_name(n) for n, _ in peft_model.named_parameters() if "lora_" not in n}
    assert mapped == base_names
    assert base_parameter_name("model.language_model.x.weight") == "model.language_model.x.weight"
    assert base_parameter_name("base_model.model.a.base_layers.weight") == "a.base_layers.weight"
