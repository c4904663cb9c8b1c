"""Image-guided upsampling: how close masks sent through the codec come back to the truth.

Each ground-truth mask is downsampled to a grid (`nearest`, as Text4Seg's data) and upsampled to
640×480 again by `nearest`, `bilinear` and `guided` (the guided filter with the image as guide).
Three synthetic sets with exact ground truth, each drawn twice with disjoint seeds (tune, test):

* shapes: `text4seg.data.synthetic.generate_sample` (flat-coloured shapes on textured backgrounds),
  one item per expression with a target;
* textured: blobs, ellipses, thin bars, pairs of small objects and concave polygons (the masks of
  bench_codec.py) where object and background are both textured, at contrasts from high to faint,
  with anti-aliased edges and noise;
* composites (needs scikit-image, a bench-only install): a photo region pasted through those masks
  onto another photo; tune and test use disjoint photos.

The guided filter's parameters are swept on the tune split (chosen: the largest eps within 0.1
cIoU points of the best mean cIoU over the sets) and the codec's defaults are scored on the test split. Photos with GrabCut masks are drawn for looking only.

Run: `.venv/bin/python bench/bench_upsample.py` (about 5 minutes on 2 cores; `--quick` for a smoke
run). Writes bench/results/upsample.md and, with scikit-image, bench/results/upsample_photos.jpg.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

# one BLAS thread: on a shared 2-core machine OpenBLAS's spinning threads make bilinear's two small
# matrix products cost tens of ms of CPU; the codec's own calls are unchanged by this
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_codec import random_masks  # noqa: E402

from text4seg.codec import grid_to_mask, mask_to_grid  # noqa: E402
from text4seg.codec import guided as guided_module  # noqa: E402
from text4seg.data.synthetic import generate_sample  # noqa: E402

OUT = Path(__file__).parent / "results" / "upsample.md"
PHOTOS_OUT = Path(__file__).parent / "results" / "upsample_photos.jpg"
H, W = 480, 640
SEEDS = {"tune": 101, "test": 202}
TUNE_PHOTOS = ("astronaut", "coffee", "brick", "grass", "immunohistochemistry")
TEST_PHOTOS = ("chelsea", "rocket", "stereo_motorcycle", "gravel", "retina")
SWEEP_CELLS = 8  # px/cell of the radius × eps sweep; other resolutions are tried after it
TIE = 0.001  # cIoU differences below this are not told apart when choosing settings
SIZES = (("small", 0, 32**2), ("medium", 32**2, 96**2), ("large", 96**2, H * W + 1))  # COCO areas

Item = tuple[np.ndarray, np.ndarray]  # (H×W×3 uint8 image, H×W bool mask)


# ---------------------------------------------------------------- data


def shapes_set(split: str, n: int) -> list[Item]:
    items = []
    for i in range(n):
        sample = generate_sample([SEEDS[split], i], (W, H))
        for expression in sample.expressions:
            mask = sample.mask(expression)
            if mask.any():
                items.append((sample.image, mask))
    return items


def texture(rng: np.random.Generator) -> np.ndarray:
    """An H×W float32 texture in about [-1, 1]: stripes, checker, blotches, fine grain or a gradient."""
    ys, xs = np.mgrid[:H, :W].astype(np.float32)
    style = int(rng.integers(5))
    angle = rng.uniform(0, np.pi)
    along = xs * np.cos(angle) + ys * np.sin(angle)
    if style == 0:
        return np.sin(along * (2 * np.pi / rng.uniform(6, 30))).astype(np.float32)
    if style == 1:
        cell = int(rng.integers(8, 40))
        return (((xs // cell + ys // cell) % 2) * 2 - 1).astype(np.float32)
    if style in (2, 3):
        scale = int(rng.integers(12, 40)) if style == 2 else int(rng.integers(1, 4))
        coarse = rng.normal(0, 1, size=(H // scale + 1, W // scale + 1)).astype(np.float32)
        return cv2.resize(coarse, (W, H), interpolation=cv2.INTER_CUBIC).clip(-2, 2) / 2
    return (along / max(H, W) * 2 - 1).astype(np.float32)


def textured_set(split: str, n: int) -> list[Item]:
    rng = np.random.default_rng(SEEDS[split])
    items = []
    for mask in random_masks(n, seed=SEEDS[split]):
        if not mask.any():
            continue
        back = rng.uniform(40, 215, size=3)
        fore = np.clip(back + rng.choice([-1, 1], size=3) * rng.uniform(8, 80, size=3), 0, 255)
        layers = [c[None, None, :] + texture(rng)[..., None] * rng.uniform(5, 35) for c in (back, fore)]
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), rng.uniform(0.5, 1.2))[..., None]
        image = layers[1] * alpha + layers[0] * (1 - alpha) + rng.normal(0, rng.uniform(2, 8), (H, W, 1))
        items.append((np.clip(image, 0, 255).astype(np.uint8), mask))
    return items


def photo(name: str) -> np.ndarray | None:
    try:
        from skimage import data
    except ImportError:
        return None
    image = getattr(data, name)()
    image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def random_view(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop of `image` covering at least half of each side, resized to W×H, maybe mirrored."""
    h, w = image.shape[:2]
    ch, cw = int(h * rng.uniform(0.5, 1)), int(w * rng.uniform(0.5, 1))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    view = cv2.resize(image[y : y + ch, x : x + cw], (W, H), interpolation=cv2.INTER_LINEAR)
    return view[:, ::-1] if rng.random() < 0.5 else view


def composite_set(split: str, n: int) -> list[Item] | None:
    names = TUNE_PHOTOS if split == "tune" else TEST_PHOTOS
    photos = [photo(name) for name in names]
    if any(p is None for p in photos):
        return None
    rng = np.random.default_rng(SEEDS[split] + 1)
    items = []
    for mask in random_masks(n, seed=SEEDS[split] + 1):
        if not mask.any():
            continue
        back, fore = rng.choice(len(photos), size=2, replace=False)
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), rng.uniform(0.5, 1.2))[..., None]
        layers = [random_view(photos[k], rng).astype(np.float32) for k in (back, fore)]
        image = layers[1] * alpha + layers[0] * (1 - alpha)
        items.append((np.clip(image, 0, 255).astype(np.uint8), mask))
    return items


# ---------------------------------------------------------------- scoring


def upsample(grid: np.ndarray, image: np.ndarray, method: str, **params) -> np.ndarray:
    return grid_to_mask(grid, (H, W), method, label=1, image=image, **params)


def score(items: list[Item], grids: list[np.ndarray], method: str, **params) -> dict[str, float]:
    """cIoU (summed intersections over summed unions) and mean IoU per mask size."""
    preds = (upsample(grid, image, method, **params) for (image, _), grid in zip(items, grids, strict=True))
    return score_masks(zip(preds, (mask for _, mask in items), strict=True))


def score_masks(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """cIoU (summed intersections over summed unions) and mean IoU per mask size of (prediction, truth)
    pairs (also bench_light_refiner's scorer)."""
    inter = union = 0
    by_size: dict[str, list[float]] = {name: [] for name, _, _ in SIZES}
    for pred, mask in pairs:
        i, u = int((pred & mask).sum()), int((pred | mask).sum())
        inter, union = inter + i, union + u
        area = int(mask.sum())
        size = next(name for name, low, high in SIZES if low <= area < high)
        by_size[size].append(i / u)
    out = {"ciou": inter / union}
    for name, values in by_size.items():
        out[name] = float(np.mean(values)) if values else float("nan")
        out[f"n_{name}"] = len(values)
    return out


def sweep(sets: dict[str, tuple[list[Item], list[np.ndarray]]], quick: bool) -> tuple[list[tuple], tuple]:
    """Settings tried on tune, as (guide, radius, eps, px/cell, mean cIoU, cIoU per set), and the one
    chosen: a colour guide over radius × eps and a grey guide at a few, all at `SWEEP_CELLS` px/cell
    (`choose`); then that setting at other px/cell, keeping the fewest within `TIE` of the best."""
    radii = (0.5, 1.0) if quick else (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    epss = (1e-4, 1e-3) if quick else (3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 1e-2, 1e-1)
    cells = SWEEP_CELLS
    rows = [_tried(sets, "colour", radius, eps, cells) for radius in radii for eps in epss]
    for radius in (0.5, 1.0, 1.5):
        for eps in (1e-5, 1e-4, 1e-3) if not quick else (1e-4,):
            rows.append(_tried(sets, "grey", radius, eps, cells))
    best = choose(rows)
    resolutions = [best] + [_tried(sets, best[0], best[1], best[2], c) for c in (4, 6, 12, 16) if c != cells]
    top = max(r[4] for r in resolutions)  # then the fewest px/cell (the cheapest) within TIE of the best
    best = min((r for r in resolutions if r[4] >= top - TIE), key=lambda r: r[3])
    return rows + resolutions[1:], best


def choose(rows: list[tuple]) -> tuple:
    """The most regularised (largest eps) setting within `TIE` of the best mean cIoU, the best mean
    among those: smaller differences are noise (px/cell alone moves a set by more), and eps keeps
    the filter stable on flat or saturated patches."""
    top = max(r[4] for r in rows)
    close = [r for r in rows if r[4] >= top - TIE]
    largest = max(r[2] for r in close)
    return max((r for r in close if r[2] == largest), key=lambda r: r[4])


def _tried(sets, guide: str, radius: float, eps: float, cell_pixels: int) -> tuple:
    old, guided_module.GUIDED_CELL_PIXELS = guided_module.GUIDED_CELL_PIXELS, cell_pixels
    try:
        per_set = {}
        for name, (items, grids) in sets.items():
            if guide == "grey":
                items = [(image.mean(axis=2).astype(np.uint8), mask) for image, mask in items]
            per_set[name] = score(items, grids, "guided", radius=radius, eps=eps)["ciou"]
    finally:
        guided_module.GUIDED_CELL_PIXELS = old
    print(f"  {guide} r={radius} eps={eps:g} px/cell={cell_pixels}: {per_set}", flush=True)
    return guide, radius, eps, cell_pixels, float(np.mean(list(per_set.values()))), per_set


def time_ms(fn: Callable[[], object], repeat: int = 30) -> tuple[float, float, float]:
    """(best wall, median wall, mean CPU) time of `fn` in ms over `repeat` calls after a warm-up call.
    CPU time (this process, all threads) is the figure least moved by other work on the machine."""
    fn()
    times, cpu = [], time.process_time()
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu) / repeat
    return min(times) * 1e3, float(np.median(times)) * 1e3, cpu * 1e3


def timings(item: Item) -> list[tuple[str, tuple[float, float, float]]]:
    image, mask = item
    grid = mask_to_grid(mask, 16).astype(np.int32)
    labels = grid.copy()
    labels[:, :5] = np.where(grid[:, :5] == 0, 2, 1)  # three labels
    grey = image.mean(axis=2).astype(np.uint8)
    cases = [
        ("nearest, one label", lambda: grid_to_mask(grid, (H, W), "nearest")),
        ("bilinear, one label", lambda: grid_to_mask(grid, (H, W), "bilinear")),
        ("guided (colour guide), one label", lambda: grid_to_mask(grid, (H, W), "guided", image=image)),
        ("guided (grey guide), one label", lambda: grid_to_mask(grid, (H, W), "guided", image=grey)),
        ("bilinear, three labels", lambda: grid_to_mask(labels, (H, W), "bilinear")),
        ("guided (colour guide), three labels", lambda: grid_to_mask(labels, (H, W), "guided", image=image)),
    ]
    return [(name, time_ms(fn)) for name, fn in cases]


# ---------------------------------------------------------------- photos, for looking


def photos_panel() -> bool:
    """GrabCut masks of a few photos, through the 16×16 grid, drawn back as bilinear (red) and
    guided (green) outlines. For looking only: the masks are GrabCut's, not ground truth."""
    tiles = []
    for name, box in (("astronaut", (0.08, 0.03, 0.95, 0.99)), ("coffee", (0.1, 0.05, 0.8, 0.9))):
        image = photo(name)
        if image is None:
            return False
        image = cv2.resize(image, (W, H), interpolation=cv2.INTER_AREA)
        rect = (int(box[0] * W), int(box[1] * H), int((box[2] - box[0]) * W), int((box[3] - box[1]) * H))
        cut = np.zeros((H, W), np.uint8)
        bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
        cv2.grabCut(image[..., ::-1].copy(), cut, rect, bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
        mask = (cut == cv2.GC_FGD) | (cut == cv2.GC_PR_FGD)
        grid = mask_to_grid(mask, 16).astype(np.int32)
        tile = image[..., ::-1].copy()
        for method, colour in (("bilinear", (0, 0, 255)), ("guided", (0, 255, 0))):
            out = upsample(grid, image, method).astype(np.uint8)
            contours, _ = cv2.findContours(out, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(tile, contours, -1, colour, 2)
        tiles.append(tile)
    cv2.imwrite(str(PHOTOS_OUT), np.concatenate(tiles, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return True


# ---------------------------------------------------------------- report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few items and settings (a smoke run)")
    args = parser.parse_args()
    n = 12 if args.quick else 120
    data = {}
    for split in ("tune", "test"):
        sets = {"shapes": shapes_set(split, n // 2), "textured": textured_set(split, n)}
        composites = composite_set(split, n)
        if composites is not None:
            sets["composites"] = composites
        data[split] = {k: (v, [mask_to_grid(m, 16).astype(np.int32) for _, m in v]) for k, v in sets.items()}
    print("sweep on tune:", {k: len(v[0]) for k, v in data["tune"].items()}, flush=True)
    tried, best = sweep(data["tune"], args.quick)
    lines = report_head(data, tried, best)
    lines += report_test(data["test"], best)
    lines += report_grids(data["test"], best)
    lines += report_timing(data["test"]["shapes"][0][0])
    if panel := photos_panel():
        lines += [
            "",
            "Picture `bench/results/upsample_photos.jpg`: GrabCut masks of two scikit-image "
            "photos through the 16×16 grid, drawn back by bilinear (red) and guided (green) upsampling; "
            "for looking only (GrabCut's masks are not ground truth). Guided outlines hug the strong edges; "
            "strong edges inside an object (eyes, mouth, patches on the suit) can cut small holes.",
        ]
    print("photos panel:", panel)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n" + _kept_section())
    print("\n".join(lines))


LIGHT_SECTION = "## Light learned refiner"
"""The section bench/bench_light_refiner.py writes: kept as it is when this script rewrites the file."""


def _kept_section() -> str:
    text = OUT.read_text() if OUT.exists() else ""
    start = text.find(LIGHT_SECTION)
    return "\n" + text[start:] if start >= 0 else ""


def report_head(data, tried, best) -> list[str]:
    counts = ", ".join(f"{k} {len(v[0])}" for k, v in data["test"].items())
    names = list(data["tune"])
    default = (guided_module.GUIDED_RADIUS, guided_module.GUIDED_EPS, guided_module.GUIDED_CELL_PIXELS)
    lines = [
        "## Upsampling",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}, "
        f"numpy {np.__version__}, OpenCV {cv2.__version__}, OPENBLAS_NUM_THREADS="
        f"{os.environ.get('OPENBLAS_NUM_THREADS')} (set by the script). "
        "Command: `.venv/bin/python bench/bench_upsample.py`. "
        "Ground-truth masks → 16×16 grid (`nearest`) → 640×480 by each method, compared with the truth. "
        "Sets (see the script's docstring): shapes (synthetic generator), textured (textured object and "
        "background, faint to strong contrast), composites (a photo region pasted onto another photo "
        f"through a mask; tune photos {', '.join(TUNE_PHOTOS)}; test photos {', '.join(TEST_PHOTOS)}). "
        f"Test items: {counts}.",
        "",
        "### Guided filter settings tried (tune split, cIoU)",
        "",
        "radius in cells; eps in squared [0, 1] intensity; px/cell: pixels per cell of the small image "
        "the filter's linear models are fitted on.",
        "",
        "| guide | radius | eps | px/cell | " + " | ".join(names) + " | mean |",
        "|---|---|---|---|" + "---|" * (len(names) + 1),
    ]
    for guide, radius, eps, cells, mean, per in tried:
        mark = "**" if (guide, radius, eps, cells) == best[:4] else ""
        values = " | ".join(f"{per[k]:.4f}" for k in names)
        lines.append(f"| {guide} | {radius} | {eps:g} | {cells} | {values} | {mark}{mean:.4f}{mark} |")
    chosen = (best[1], best[2], best[3])
    lines += [
        "",
        f"Chosen on tune (bold): among the rows at {SWEEP_CELLS} px/cell, the largest eps within "
        f"{TIE * 100:g} cIoU points of the best mean cIoU over the sets; then, at that setting (last "
        f"rows), the fewest px/cell within {TIE * 100:g} points of the best: {best[0]} guide, radius "
        f"{best[1]} cells, eps {best[2]:g}, {best[3]} px/cell. Codec defaults (GUIDED_RADIUS, GUIDED_EPS, GUIDED_CELL_PIXELS): {default}"
        + (" (the same)." if chosen == default else f" — differ from the best {chosen}: update them."),
    ]
    return lines


def report_test(test, best) -> list[str]:
    lines = [
        "",
        "### Held-out test split",
        "",
        "cIoU over the set; mean IoU by mask area (COCO: small < 32², medium < 96² pixels; n in brackets).",
        "",
        "| set | method | cIoU | small | medium | large |",
        "|---|---|---|---|---|---|",
    ]
    for name, (items, grids) in test.items():
        results = {m: score(items, grids, m) for m in ("nearest", "bilinear", "guided")}
        for method, r in results.items():
            sizes = " | ".join(f"{r[s]:.3f} ({r['n_' + s]})" if r["n_" + s] else "–" for s, _, _ in SIZES)
            lines.append(f"| {name} | {method} | {r['ciou']:.4f} | {sizes} |")
        gain = (results["guided"]["ciou"] - results["bilinear"]["ciou"]) * 100
        lines.append(f"| {name} | guided − bilinear | {gain:+.1f} points | | | |")
    return lines


def report_grids(test, best) -> list[str]:
    lines = ["", "### Other grid sizes (test split, cIoU; same cell-relative settings)", ""]
    lines += ["| grid | set | nearest | bilinear | guided |", "|---|---|---|---|---|"]
    for g in (24, 32):
        for name, (items, _) in test.items():
            grids = [mask_to_grid(m, g).astype(np.int32) for _, m in items]
            values = [score(items, grids, m)["ciou"] for m in ("nearest", "bilinear", "guided")]
            lines.append(f"| {g}×{g} | {name} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    return lines


def report_timing(item: Item) -> list[str]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = timings(item)
    lines = [
        "",
        "### Time per 640×480 output (ms, 16×16 grid, 30 calls)",
        "",
        f"On the shared {os.cpu_count()}-core machine at load average {load:.1f} (other work running): "
        "CPU time per call (this process, all threads) is the figure least moved by that load; wall "
        "times (best and median call) show it.",
        "",
        "| call | CPU | wall, best | wall, median |",
        "|---|---|---|---|",
    ]
    return lines + [
        f"| `grid_to_mask`: {name} | {cpu:.2f} | {best:.2f} | {median:.2f} |"
        for name, (best, median, cpu) in rows
    ]


if __name__ == "__main__":
    main()
