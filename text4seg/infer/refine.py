"""SAM refinement of coarse text4seg masks (transformers `SamModel` / `Sam2Model`).

A decoded descriptor is a coarse g×g label grid. For each label in it, SAM is prompted with
- a dense mask prompt: the label's cells upsampled to the mask-prompt frame (4× the image-embedding
  side, 256×256 for the released 1024-px checkpoints, read from the model) as logits;
- a few positive points (interior foreground cells) and negative points (background cells near the
  object), sampled with a fixed seed so results are reproducible;
- the box of the coarse mask;
and then re-prompted a few times with its own low-resolution logits. Image embeddings are computed once
per image and cached, so every expression asked about the same image costs only the light mask decoder.

Guard: SAM on a wrong prompt can be much worse than the coarse mask (users of the reference
implementation saw refinement lower scores), so when the refined mask's IoU with the coarse one is
under `min_iou` the coarse mask is kept and the result says so (`LabelRefinement.kept_coarse`).

Real checkpoints: `SamRefiner.from_pretrained("facebook/sam-vit-base")` (or `facebook/sam-vit-huge`,
`facebook/sam2.1-hiera-tiny|small|base-plus|large`). Tests, benches and the offline demo use
`SamRefiner(*tiny_sam())`: a random-weight model built from a config (no download).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from text4seg.codec import grid_to_mask, mask_to_box
from text4seg.protocol.images import load_image

SUPPORTED_MODELS = ("SamModel", "Sam2Model")


@dataclass(frozen=True)
class LabelRefinement:
    """What refinement did to one label of the grid."""

    label: int
    iou_with_coarse: float  # IoU between SAM's mask and the coarse mask
    kept_coarse: bool  # the guard rejected SAM's mask (IoU under min_iou)
    sam_score: float  # SAM's own predicted IoU for its mask
    n_positive: int
    n_negative: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "iou_with_coarse": self.iou_with_coarse,
            "kept_coarse": self.kept_coarse,
            "sam_score": self.sam_score,
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
        }


@dataclass
class Refinement:
    """A refined mask at image size: bool for a binary grid, int32 label map for a multi-label one."""

    mask: np.ndarray
    coarse: np.ndarray
    labels: list[LabelRefinement] = field(default_factory=list)
    embedding_cached: bool = False
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def kept_coarse(self) -> bool:
        """True when the guard kept the coarse mask for at least one label."""
        return any(r.kept_coarse for r in self.labels)

    def as_dict(self) -> dict[str, Any]:
        return {
            "labels": [r.as_dict() for r in self.labels],
            "kept_coarse": self.kept_coarse,
            "embedding_cached": self.embedding_cached,
            "seconds": dict(self.seconds),
        }


@dataclass
class _Embedded:
    embeddings: Any  # a tensor (SAM) or a list of tensors (SAM 2)
    original_size: tuple[int, int]  # (H, W) of the image
    resized_size: tuple[int, int]  # (h, w) of the image inside the encoder's input frame
    input_size: tuple[int, int]  # (S_h, S_w) of the encoder's input frame (padding included)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def image_key(image: Image.Image) -> str:
    """A content key for an RGB image: the same pixels give the same key, whichever object holds them."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(f"{image.size}".encode())
    return digest.hexdigest()


def _interior(cells: np.ndarray, outside: bool) -> np.ndarray:
    """Cells whose four neighbours share their value (`outside` is the value assumed past the border)."""
    padded = np.pad(cells, 1, constant_values=outside)
    return cells & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]


class SamRefiner:
    """Refines coarse label grids with a transformers SAM or SAM 2 model (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        *,
        device: str | torch.device | None = None,
        iterations: int = 3,
        n_positive: int = 3,
        n_negative: int = 3,
        min_iou: float = 0.5,
        prompt_logit: float = 10.0,
        seed: int = 0,
        cache_size: int = 8,
    ) -> None:
        name = type(model).__name__
        if name not in SUPPORTED_MODELS:
            raise TypeError(f"SamRefiner needs one of {SUPPORTED_MODELS}, got {name}")
        if iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {iterations}")
        self.device = torch.device(device) if device is not None else _default_device()
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.iterations = iterations
        self.n_positive = n_positive
        self.n_negative = n_negative
        self.min_iou = min_iou
        self.prompt_logit = prompt_logit
        self.seed = seed
        self.cache_size = cache_size
        self._cache: OrderedDict[Hashable, _Embedded] = OrderedDict()
        self.encoder_calls = 0
        self.decoder_calls = 0

    @classmethod
    def from_pretrained(
        cls,
        model_id: str = "facebook/sam-vit-base",
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> SamRefiner:
        """Load a SAM (`facebook/sam-vit-base|huge`) or SAM 2 (`facebook/sam2.1-hiera-*`) checkpoint."""
        from transformers import AutoModel, AutoProcessor

        device = torch.device(device) if device is not None else _default_device()
        if dtype is None:
            dtype = torch.float16 if device.type == "cuda" else torch.float32
        model = AutoModel.from_pretrained(model_id, dtype=dtype)
        processor = AutoProcessor.from_pretrained(model_id)
        return cls(model, processor, device=device, **kwargs)

    @property
    def embedding_size(self) -> tuple[int, int]:
        """Side(s) of the image embedding, from the model's prompt encoder."""
        rows, cols = self.model.prompt_encoder.image_embedding_size
        return int(rows), int(cols)

    @property
    def mask_prompt_size(self) -> tuple[int, int]:
        """The dense mask prompt's size: 4× the embedding (256×256 for the released checkpoints)."""
        rows, cols = self.embedding_size
        return 4 * rows, 4 * cols

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def clear_cache(self) -> None:
        self._cache.clear()

    # -- image embeddings -------------------------------------------------------------------------
    def _embed(self, image: Image.Image, key: Hashable | None) -> tuple[_Embedded, bool]:
        key = image_key(image) if key is None else key
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit, True
        enc = self.processor(images=image, return_tensors="pt")
        pixel_values = enc["pixel_values"].to(self.device, self.dtype)
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(pixel_values)
        self.encoder_calls += 1
        original = tuple(int(v) for v in enc["original_sizes"][0])
        input_size = tuple(int(v) for v in pixel_values.shape[-2:])
        resized = enc.get("reshaped_input_sizes")
        resized = tuple(int(v) for v in resized[0]) if resized is not None else input_size
        entry = _Embedded(embeddings, original, resized, input_size)
        if self.cache_size > 0:
            self._cache[key] = entry
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return entry, False

    # -- prompts ----------------------------------------------------------------------------------
    def _sample_points(
        self, cells: np.ndarray, label: int, size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Seeded positive/negative points (x, y in image pixels) at cell centres; labels 1/0."""
        rng = np.random.default_rng((self.seed, label))
        rows, cols = cells.shape
        height, width = size
        inner = _interior(cells, outside=False)
        positives = np.argwhere(inner if inner.any() else cells)
        background = ~cells
        inner_bg = _interior(background, outside=True)
        r_idx, c_idx = np.nonzero(cells)
        near = np.zeros_like(cells)
        near[max(r_idx.min() - 1, 0) : r_idx.max() + 2, max(c_idx.min() - 1, 0) : c_idx.max() + 2] = True
        for candidates in (inner_bg & near, background & near, inner_bg, background):
            if candidates.any():
                negatives = np.argwhere(candidates)
                break
        else:
            negatives = np.zeros((0, 2), dtype=np.int64)
        pos = positives[rng.permutation(len(positives))[: self.n_positive]]
        neg = negatives[rng.permutation(len(negatives))[: self.n_negative]]
        chosen = np.concatenate([pos, neg]).astype(np.float64)
        xy = np.stack([(chosen[:, 1] + 0.5) * width / cols, (chosen[:, 0] + 0.5) * height / rows], axis=1)
        labels = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
        return xy, labels

    def _mask_prompt(self, cells: np.ndarray, emb: _Embedded) -> torch.Tensor:
        """The label's cells as logits in the mask-prompt frame (the image's place in the padded input)."""
        m_rows, m_cols = self.mask_prompt_size
        s_h, s_w = emb.input_size
        r_h, r_w = emb.resized_size
        valid = (max(1, round(r_h * m_rows / s_h)), max(1, round(r_w * m_cols / s_w)))
        soft = torch.from_numpy(cells.astype(np.float32))[None, None]
        shrinking = valid[0] < cells.shape[0] or valid[1] < cells.shape[1]
        soft = F.interpolate(soft, size=valid, mode="bilinear", align_corners=False, antialias=shrinking)
        prompt = torch.full((1, 1, m_rows, m_cols), -self.prompt_logit)
        prompt[..., : valid[0], : valid[1]] = (2 * soft - 1) * self.prompt_logit
        return prompt.to(self.device, self.dtype)

    def _to_image(self, low_res: torch.Tensor, emb: _Embedded) -> np.ndarray:
        """Low-resolution logits -> logits at image size (undo the padding, then resize)."""
        x = F.interpolate(low_res.float(), size=emb.input_size, mode="bilinear", align_corners=False)
        x = x[..., : emb.resized_size[0], : emb.resized_size[1]]
        x = F.interpolate(x, size=emb.original_size, mode="bilinear", align_corners=False)
        return x[0, 0].cpu().numpy()

    def _refine_label(
        self, cells: np.ndarray, coarse: np.ndarray, label: int, emb: _Embedded
    ) -> tuple[np.ndarray, LabelRefinement]:
        xy, point_labels = self._sample_points(cells, label, emb.original_size)
        sy = emb.resized_size[0] / emb.original_size[0]
        sx = emb.resized_size[1] / emb.original_size[1]
        scale = torch.tensor([sx, sy], dtype=torch.float64)
        points = (torch.from_numpy(xy) * scale).to(self.device, self.dtype)[None, None]
        labels = torch.from_numpy(point_labels).to(self.device)[None, None]
        x0, y0, x1, y1 = mask_to_box(coarse)
        box = torch.tensor([[[x0 * sx, y0 * sy, x1 * sx, y1 * sy]]], dtype=torch.float64).to(
            self.device, self.dtype
        )
        prompt = self._mask_prompt(cells, emb)
        score = 0.0
        with torch.inference_mode():
            for _ in range(self.iterations):
                out = self.model(
                    image_embeddings=emb.embeddings,
                    input_points=points,
                    input_labels=labels,
                    input_boxes=box,
                    input_masks=prompt,
                    multimask_output=False,
                )
                self.decoder_calls += 1
                low_res = out.pred_masks[:, 0, :1]
                score = float(out.iou_scores[0, 0, 0])
                if tuple(low_res.shape[-2:]) != self.mask_prompt_size:
                    low_res = F.interpolate(
                        low_res, size=self.mask_prompt_size, mode="bilinear", align_corners=False
                    )
                prompt = low_res
        logits = self._to_image(prompt, emb)
        refined = logits > 0
        union = np.count_nonzero(refined | coarse)
        iou = np.count_nonzero(refined & coarse) / union if union else 1.0
        kept = iou < self.min_iou
        if kept:
            logits = np.where(coarse, self.prompt_logit, -self.prompt_logit).astype(np.float32)
        report = LabelRefinement(
            label, float(iou), bool(kept), score, int(point_labels.sum()), int((point_labels == 0).sum())
        )
        return logits, report

    # -- public -----------------------------------------------------------------------------------
    def refine(
        self,
        image: Image.Image | np.ndarray,
        grid: np.ndarray,
        *,
        coarse: np.ndarray | None = None,
        key: Hashable | None = None,
    ) -> Refinement:
        """Refine a coarse label grid (g×g, 0 = background; or an H×W mask / label map) for `image`.

        `coarse` is the coarse mask or label map at image size the guard compares against (default: the
        grid upsampled by `text4seg.grid_to_mask`). `key` names the image in the embedding cache (default:
        a hash of its pixels). Each label present in the grid is refined on its own; where refined labels
        overlap, the pixel goes to the label with the larger logit.
        """
        start = time.perf_counter()
        rgb = load_image(image)
        grid = np.asarray(grid)
        if grid.ndim != 2:
            raise ValueError(f"grid must be 2-D, got shape {grid.shape}")
        grid = grid.astype(np.int64)
        size = (rgb.height, rgb.width)
        binary = grid.max(initial=0) <= 1
        if coarse is not None:
            coarse = np.asarray(coarse)
            if coarse.shape != size:
                raise ValueError(f"coarse mask shape {coarse.shape} differs from the image size {size}")
            coarse = coarse.astype(bool if binary else np.int32)
        else:
            coarse = grid_to_mask(grid, size) if grid.shape != size else grid.copy()
            coarse = coarse.astype(bool if binary else np.int32)
        present = [int(v) for v in np.unique(grid) if v > 0]
        if not present:
            mask = np.zeros(size, dtype=bool if binary else np.int32)
            return Refinement(mask, coarse, [], False, {"embed": 0.0, "decode": 0.0})
        emb, cached = self._embed(rgb, key)
        embedded = time.perf_counter()
        best = np.full(size, -np.inf, dtype=np.float32)
        label_map = np.zeros(size, dtype=np.int32)
        reports = []
        for value in present:
            target = (coarse == value) if not binary else coarse
            if not target.any():  # the grid's cells vanished when upsampled: nothing to prompt with
                target = grid_to_mask(grid == value, size, method="nearest")
            logits, report = self._refine_label(grid == value, target, value, emb)
            reports.append(report)
            take = (logits > 0) & (logits > best)
            label_map[take] = value
            best = np.where(take, logits, best)
        done = time.perf_counter()
        mask = label_map > 0 if binary else label_map
        seconds = {"embed": embedded - start, "decode": done - embedded}
        return Refinement(mask, coarse, reports, cached, seconds)

    def refine_mask(
        self, image: Image.Image | np.ndarray, mask: np.ndarray, *, key: Hashable | None = None
    ) -> Refinement:
        """Refine a binary H×W mask at image size (the mask serves as grid and as coarse mask)."""
        mask = np.asarray(mask).astype(bool)
        return self.refine(image, mask.astype(np.int64), coarse=mask, key=key)


def tiny_sam(kind: str = "sam", seed: int = 0) -> tuple[torch.nn.Module, Any]:
    """A tiny random-weight `SamModel` (256-px input, 16×16 embedding, ~0.5M params) or `Sam2Model`
    (128-px input, 8×8 embedding, ~0.35M params) with a matching processor, built offline from configs.
    For tests and benches: the masks it makes are meaningless, the shapes and the code paths are real."""
    from transformers import (
        Sam2Config,
        Sam2ImageProcessor,
        Sam2Model,
        Sam2Processor,
        SamConfig,
        SamImageProcessor,
        SamModel,
        SamProcessor,
    )
    from transformers.models.sam2.configuration_sam2 import Sam2HieraDetConfig, Sam2VisionConfig

    torch.manual_seed(seed)
    if kind == "sam":
        config = SamConfig(
            vision_config={
                "hidden_size": 96,
                "image_size": 256,
                "patch_size": 16,
                "output_channels": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "global_attn_indexes": [1],
                "mlp_dim": 192,
                "num_pos_feats": 32,
            },
            prompt_encoder_config={"hidden_size": 64, "image_size": 256, "patch_size": 16},
            mask_decoder_config={
                "hidden_size": 64,
                "mlp_dim": 128,
                "num_attention_heads": 2,
                "iou_head_hidden_dim": 64,
            },
        )
        size = {"longest_edge": 256}
        processor = SamProcessor(
            image_processor=SamImageProcessor(size=size, pad_size={"height": 256, "width": 256})
        )
        return SamModel(config).eval(), processor
    if kind != "sam2":
        raise ValueError(f"kind must be 'sam' or 'sam2', got {kind!r}")
    backbone = Sam2HieraDetConfig(
        hidden_size=16,
        num_attention_heads=1,
        image_size=[128, 128],
        blocks_per_stage=[1, 1, 2, 1],  # a global-attention block may not open a pooling stage
        embed_dim_per_stage=[16, 32, 64, 128],
        num_attention_heads_per_stage=[1, 1, 2, 2],
        window_size_per_stage=[4, 4, 4, 4],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[4, 4],
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=[128, 64, 32, 16],
        backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
        fpn_hidden_size=32,
    )
    config = Sam2Config(
        vision_config=vision,
        prompt_encoder_config={"hidden_size": 32, "image_size": 128, "patch_size": 16},
        mask_decoder_config={
            "hidden_size": 32,
            "mlp_dim": 64,
            "num_attention_heads": 2,
            "iou_head_hidden_dim": 32,
        },
    )
    processor = Sam2Processor(image_processor=Sam2ImageProcessor(size={"height": 128, "width": 128}))
    return Sam2Model(config).eval(), processor
