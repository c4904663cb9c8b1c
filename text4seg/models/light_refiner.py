"""The light learned refiner's network, its inputs and its files (issue 17).

A small U-Net (about 1 M parameters) sees the image and a label's soft masks (bilinear and guided, from
the codec) at `LightRefinerConfig.side` pixels along the image's long side and predicts a correction
to the guided mask's logits; the correction is upsampled bilinearly and added at image size, so the
outline keeps the guided filter's full-resolution edges and an untrained net (its last layer is zero)
gives guided upsampling exactly. bench/results/upsample.md ("Light learned refiner") has its figures.

Training lives in `text4seg.train.light_refiner`, use in `text4seg.infer.light` (`--refine light:PATH`).
A saved refiner is a folder holding `model.safetensors` and `light_refiner.json` (the config).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from text4seg.codec.guided import guided_scores

CONFIG_NAME = "light_refiner.json"
WEIGHTS_NAME = "model.safetensors"
CHANNELS = 5
"""The net's input channels: RGB, the bilinear and the guided soft mask, each about in [-0.5, 0.5]."""


class LightRefinerError(ValueError):
    """A light refiner folder that cannot be read (the message names the file and what is wrong)."""


@dataclass(frozen=True)
class LightRefinerConfig:
    """The net's shape and how it is fed: `widths` per U-Net level, `side` the long side of its input in
    pixels, `clip` the soft-mask clip before its logit is taken (base logits lie in ±log((1-clip)/clip))."""

    widths: tuple[int, ...] = (8, 16, 32, 64, 256)
    side: int = 160
    clip: float = 0.01

    def __post_init__(self) -> None:
        if not self.widths or any(int(w) < 4 or int(w) % 4 for w in self.widths):
            raise ValueError(f"widths must be multiples of 4 (GroupNorm of 4 groups), got {self.widths}")
        if int(self.side) < 16:
            raise ValueError(f"side must be at least 16 pixels, got {self.side}")
        if not 0 < self.clip < 0.5:
            raise ValueError(f"clip must lie in (0, 0.5), got {self.clip}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3×3 convolutions with GroupNorm (BatchNorm's running statistics lagged the weights in short
    CPU runs: held-out cIoU 0.03 in eval mode against 0.96 in train mode; bench_light_refiner.py)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.GroupNorm(4, c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.GroupNorm(4, c_out),
        nn.ReLU(inplace=True),
    )


class LightRefinerNet(nn.Module):
    """A U-Net whose one-channel output, at its input's size, is a correction to base logits; it starts
    at zero everywhere. `inputs`: the input channels (`CHANNELS` as `net_input` makes them)."""

    def __init__(self, config: LightRefinerConfig | None = None, inputs: int = CHANNELS) -> None:
        super().__init__()
        self.config = config or LightRefinerConfig()
        widths = self.config.widths
        self.down = nn.ModuleList(_block(c, w) for c, w in zip((inputs, *widths), widths, strict=False))
        self.up = nn.ModuleList(
            _block(widths[i] + widths[i + 1], widths[i]) for i in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, layer in enumerate(self.down):
            x = layer(x if i == 0 else F.max_pool2d(x, 2, ceil_mode=True))
            skips.append(x)
        for layer, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = layer(torch.cat([x, skip], dim=1))
        return self.head(x)


def net_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    """The net's input size for an image of `size = (height, width)`: its long side `side` pixels."""
    scale = side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def soft_masks(grid: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bilinear, guided) H×W float32 soft masks of a 0/1 `grid` for the H×W×3 uint8 `image`, computed
    as the codec's `grid_to_mask` computes them."""
    import cv2

    height, width = image.shape[:2]
    bilinear = cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    guided = next(guided_scores(grid.astype(np.int64), image, (height, width), np.array([1])))[1]
    return bilinear, guided


def to_logit(soft: np.ndarray, clip: float) -> np.ndarray:
    """The logit of a soft mask clipped to [clip, 1 - clip] (float32)."""
    p = np.clip(soft, clip, 1 - clip).astype(np.float32)
    return np.log(p / (1 - p))


def net_input(image: np.ndarray, bilinear: np.ndarray, guided: np.ndarray, side: int) -> np.ndarray:
    """The net's 5×h×w float32 input: RGB, bilinear and guided soft masks at `net_size`, minus 0.5."""
    import cv2

    height, width = net_size(image.shape[:2], side)
    shrink = cv2.INTER_AREA
    rgb = cv2.resize(image, (width, height), interpolation=shrink).astype(np.float32) / 255
    masks = [cv2.resize(m, (width, height), interpolation=shrink) for m in (bilinear, guided)]
    return np.concatenate([rgb.reshape(height, width, 3).transpose(2, 0, 1), np.stack(masks)]) - 0.5


def refine_logits(net: LightRefinerNet, image: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The refined H×W float32 logits of a 0/1 `grid` for the H×W×3 uint8 `image` (foreground where ≥ 0)."""
    bilinear, guided = soft_masks(grid, image)
    x = torch.from_numpy(net_input(image, bilinear, guided, net.config.side)[None])
    device = next(net.parameters()).device
    with torch.inference_mode():
        delta = F.interpolate(net(x.to(device)), size=image.shape[:2], mode="bilinear", align_corners=False)
    return to_logit(guided, net.config.clip) + delta[0, 0].float().cpu().numpy()


def save_light_refiner(net: LightRefinerNet, folder: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write `net` to `folder` (created): `model.safetensors` and `light_refiner.json` (its config, plus
    `info`, e.g. how it was trained). Returns the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME))
    config = {"kind": "light_refiner", **asdict(net.config), "info": info or {}}
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def read_config(folder: str | Path) -> LightRefinerConfig:
    """The config in `folder`/light_refiner.json (LightRefinerError naming the file when unusable)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise LightRefinerError(
            f"{path}: no such file (is {folder} a folder saved by `text4seg train-refiner`?)"
        )
    try:
        data = json.loads(path.read_text())
        names = {f.name for f in fields(LightRefinerConfig)}
        return LightRefinerConfig(**{k: v for k, v in data.items() if k in names})
    except (ValueError, TypeError, AttributeError) as err:
        raise LightRefinerError(f"{path}: not a light refiner config ({err})") from None


def load_light_refiner(folder: str | Path, device: str | torch.device | None = None) -> LightRefinerNet:
    """The net saved in `folder` by `save_light_refiner`, in eval mode (LightRefinerError naming the file
    when a file is missing, damaged or does not fit the config)."""
    from safetensors.torch import load_file

    net = LightRefinerNet(read_config(folder))
    path = Path(folder) / WEIGHTS_NAME
    try:
        net.load_state_dict(load_file(str(path)))
    except FileNotFoundError:
        raise LightRefinerError(f"{path}: no such file") from None
    except Exception as err:  # safetensors' own errors, or tensors of the wrong names or shapes
        raise LightRefinerError(
            f"{path}: not weights of this light refiner ({str(err).splitlines()[0]})"
        ) from None
    return net.to(device or "cpu").eval()
