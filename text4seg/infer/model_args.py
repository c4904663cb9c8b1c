"""Command-line options shared by every command that runs a segmentation model (`predict`, `evaluate`).

One definition of the model, decoding, refinement and device flags, the argument types that refuse
bad numbers while parsing, the checks that run before anything heavy (the model and SAM sources, the
saved text4seg.json, where outputs go), and one way to turn the flags into a `Segmenter` and an
optional `SamRefiner`, so the commands cannot drift apart.

Refinement takes one form in both commands: `--refine sam [--sam ID]` or `--refine light:PATH` (the
light learned refiner saved by `text4seg train-refiner`); `--refine none`, the default, refines nothing.
The older `predict --refine ID` (a SAM model named directly) still works.

How the model is asked and shown the image are model arguments too: `--question-style ours|text4seg`
(`protocol.templates.QUESTION_STYLES`; `evaluate`'s older `list`/`pipe` are deprecated aliases) and
`--visible squash|pad|crop` (`models.preprocess.VISIBLE_MODES`). An argument given wins over the model's
text4seg.json (or its saved processor), which wins over the default.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import Any

SAM_HELP = (
    "SAM / SAM 2 model: facebook/sam-vit-base|huge, facebook/sam2.1-hiera-*, a folder, or 'tiny' "
    "(a random-weight tiny SAM for offline smoke tests; its masks mean nothing)"
)
DEFAULT_SAM = "facebook/sam-vit-base"
"""The SAM model `--refine sam` uses when `--sam` is not given."""
REFINE_OFF = "none"
REFINE_SAM = "sam"
QUESTION_STYLES = ("ours", "text4seg")
"""`--question-style` choices (`text4seg.protocol.templates.QUESTION_STYLES`, repeated here so that parsing
imports nothing heavy; a test keeps them equal)."""
QUESTION_STYLE_ALIASES = {"list": "ours", "pipe": "text4seg"}
"""`evaluate --question-style` spellings from before the option was shared (deprecated, with a warning)."""
VISIBLE_MODES = ("squash", "pad", "crop")
"""`--visible` choices (`text4seg.models.preprocess.VISIBLE_MODES`; a test keeps them equal)."""
REFINE_LIGHT = "light:"
"""`--refine light:PATH`: the light learned refiner saved in the folder PATH."""


class ArgsError(ValueError):
    """A command-line value that is refused before any work (one line, naming the flag)."""


def one_line(err: BaseException, limit: int = 400) -> str:
    """An error's message on one line (whitespace runs collapsed, cut at `limit` characters)."""
    message = err.args[0] if isinstance(err, KeyError) and err.args else err  # KeyError's str() adds quotes
    text = " ".join(str(message).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- argument types (argparse reports their ValueError/ArgumentTypeError as one `error:` line) --------
def positive_int(text: str) -> int:
    """An int of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An int of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def grid_side(text: str) -> int:
    """A grid side in 1..`text4seg.codec.format.MAX_GRID_SIDE`."""
    from text4seg.codec.format import MAX_GRID_SIDE

    value = int(text)
    if not 1 <= value <= MAX_GRID_SIDE:
        raise argparse.ArgumentTypeError(f"must be in 1..{MAX_GRID_SIDE}, got {value}")
    return value


def finite_float(text: str) -> float:
    """A finite float (no nan or inf)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def fraction(text: str) -> float:
    """A float in 0..1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in 0..1, got {text}")
    return value


class QuestionStyleAction(argparse.Action):
    """Stores a `--question-style`, turning a deprecated alias into its name with a one-line warning."""

    def __call__(self, parser, namespace, values, option_string=None):
        style = QUESTION_STYLE_ALIASES.get(values, values)
        if style != values:
            print(
                f"{parser.prog}: warning: {option_string} {values} is deprecated; "
                f"say {option_string} {style}",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, style)


# -- the options -----------------------------------------------------------------------------------
def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Add MODEL, --adapter, decoding (--no-constrained, --no-jump-forward, --sentences, --target-label,
    --background-bias), asking and seeing (--question-style, --visible), --dtype, --device and
    --trust-remote-code to `parser`."""
    parser.add_argument(
        "model", help="model folder, checkpoint folder or hub id (a PEFT adapter folder also works)"
    )
    parser.add_argument(
        "--adapter", default=None, help="PEFT adapter folder (or hub id) to load on top of MODEL"
    )
    parser.add_argument(
        "--no-constrained",
        dest="constrained",
        action="store_false",
        help="free decoding (lenient decoding repairs the text)",
    )
    parser.add_argument(
        "--no-jump-forward",
        dest="jump_forward",
        action="store_false",
        help="generate grammar-forced tokens one forward pass at a time",
    )
    parser.add_argument(
        "--sentences",
        choices=("templates", "free", "none"),
        default=None,
        help="answer sentence allowed before <seg> under constraints (default: the model's "
        "text4seg.json, else templates)",
    )
    parser.add_argument(
        "--target-label",
        default=None,
        metavar="WORD",
        help="fixed label the model writes for referred cells (default: the model's text4seg.json, "
        "else the expression)",
    )
    parser.add_argument(
        "--background-bias",
        type=finite_float,
        default=None,
        metavar="B",
        help="subtract B from the logits of background tokens, a recall knob to calibrate on val data "
        "(default: the model's text4seg.json, else 0)",
    )
    parser.add_argument(
        "--question-style",
        choices=(*QUESTION_STYLES, *QUESTION_STYLE_ALIASES),
        action=QuestionStyleAction,
        default=None,
        metavar="|".join(QUESTION_STYLES),
        help="how questions are worded: ours (this package's templates; class lists as 'a, b and c') or "
        "text4seg (as Text4Seg's released checkpoints were trained; class lists joined by ' | '). Replaces "
        "a question saved in text4seg.json (default: the model's text4seg.json, else ours)",
    )
    parser.add_argument(
        "--visible",
        choices=VISIBLE_MODES,
        default=None,
        help="how the whole image reaches the model when its processor would crop: squash (resize to "
        "its square), pad (pad to a square first) or crop (the stock view; a warning says what it hides) "
        "(default: as saved with the model's processor, else squash)",
    )
    parser.add_argument("--dtype", default="auto", help="model dtype: auto, float32, bfloat16, float16")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the model folder"
    )


def add_refine_args(parser: argparse.ArgumentParser) -> None:
    """Add --refine none|sam, --sam ID, --min-iou and --sam-iterations to `parser`."""
    parser.add_argument(
        "--refine",
        default=REFINE_OFF,
        metavar="none|sam|light:PATH",
        help="refine the coarse masks with SAM ('sam': the model of --sam) or with the light learned "
        "refiner saved in PATH by `text4seg train-refiner`; 'none' (default) refines nothing. A SAM "
        "model id or folder given here directly also works (older spelling)",
    )
    parser.add_argument(
        "--sam", default=None, metavar="ID", help=f"for --refine sam (default {DEFAULT_SAM}). {SAM_HELP}"
    )
    parser.add_argument(
        "--min-iou",
        type=fraction,
        default=0.5,
        help="keep the coarse mask when SAM's IoU with it is lower (0.5)",
    )
    parser.add_argument(
        "--sam-iterations", type=positive_int, default=3, help="SAM prompt rounds per mask (3)"
    )


def sam_model(args: argparse.Namespace) -> str | None:
    """The SAM model the refine options ask for, or None for no refinement (ArgsError when
    `--refine ID` and `--sam ID2` name two different models)."""
    choice = args.refine or REFINE_OFF
    if choice == REFINE_OFF or choice.startswith(REFINE_LIGHT):
        return None
    if choice == REFINE_SAM:
        return args.sam or DEFAULT_SAM
    if args.sam is not None and args.sam != choice:
        raise ArgsError(f"--refine {choice} and --sam {args.sam} name two SAM models; give one")
    return choice


def light_model(args: argparse.Namespace) -> str | None:
    """The folder of `--refine light:PATH`, or None for another choice (ArgsError when PATH is empty or
    holds no light refiner, or when --sam is given too)."""
    choice = getattr(args, "refine", None) or REFINE_OFF
    if not choice.startswith(REFINE_LIGHT):
        return None
    from text4seg.models.light_refiner import CONFIG_NAME  # torch: only when asked for

    folder = choice[len(REFINE_LIGHT) :]
    if not folder:
        raise ArgsError("--refine light:PATH needs the folder PATH written by `text4seg train-refiner`")
    if getattr(args, "sam", None) is not None:
        raise ArgsError(f"--refine {choice} and --sam {args.sam} name two refiners; give one")
    if not (Path(folder) / CONFIG_NAME).is_file():
        raise ArgsError(
            f"--refine {choice}: {folder} holds no {CONFIG_NAME} (write it with `text4seg train-refiner`)"
        )
    return folder


# -- checks before heavy work ------------------------------------------------------------------------
def check_output_file(path: str | None, flag: str) -> None:
    """ArgsError when a file output would land on a folder or under a file."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ArgsError(f"{flag} {path}: is a folder; give a file name")
    parent = next((p for p in target.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ArgsError(f"{flag} {path}: {parent} is a file, not a folder")


def check_output_folder(path: str | None, flag: str) -> None:
    """ArgsError when an output folder is an existing file or lies under one."""
    if path is None:
        return
    target = Path(path)
    existing = next((p for p in (target, *target.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ArgsError(f"{flag} {path}: {existing} is a file, not a folder")


def preflight(args: argparse.Namespace) -> dict[str, Any]:
    """The checks that need no model: MODEL, --adapter and the SAM model exist (a folder, the local
    Hugging Face cache or a reachable Hub: `ModelSourceError`, an OSError), and their text4seg.json
    files are valid (ValueError naming the file). When a Hub id is only cached and the Hub is unreachable,
    the process goes offline (`sources.offline_when_unreachable`). Returns the saved settings
    (`sources.saved_settings`)."""
    from text4seg.infer import sources

    sources.check_sources(args.model, args.adapter)
    settings = sources.saved_settings(args.model, args.adapter)
    sam = sam_model(args) if hasattr(args, "refine") else None
    light_model(args)
    if sam is not None and sam != "tiny":
        sources.check_source(sam, "SAM model")
    sources.offline_when_unreachable(*sources.named_sources(args.model, args.adapter), sam)
    return settings


# -- building ----------------------------------------------------------------------------------------
def make_refiner(sam: str, device: str | None, min_iou: float = 0.5, iterations: int = 3) -> Any:
    """A `SamRefiner` for a checkpoint id or folder, or the tiny random one for `sam == "tiny"`."""
    from text4seg.infer.refine import SamRefiner, tiny_sam

    if sam == "tiny":
        return SamRefiner(*tiny_sam(), device=device, min_iou=min_iou, iterations=iterations)
    return SamRefiner.from_pretrained(sam, device=device, min_iou=min_iou, iterations=iterations)


def refiner_from_args(args: argparse.Namespace, device: str | None) -> Any:
    """The `SamRefiner` or `LightRefiner` the refine options describe, or None."""
    light = light_model(args)
    if light is not None:
        from text4seg.infer.light import LightRefiner

        return LightRefiner.load(light, device=device)
    sam = sam_model(args)
    if sam is None:
        return None
    return make_refiner(sam, device, args.min_iou, args.sam_iterations)


def segmenter_from_args(
    args: argparse.Namespace, *, grid: Any, device: str | None, refiner: Any = None, **settings: Any
) -> Any:
    """The `Segmenter` the options of `add_model_args` describe (raises OSError when MODEL cannot load,
    ValueError for an invalid text4seg.json or setting); `settings` (e.g. `question`, `upsample`) win
    over the saved ones where not None."""
    from text4seg.infer.segmenter import Segmenter

    return Segmenter.from_pretrained(
        args.model,
        adapter=args.adapter,
        refiner=refiner,
        dtype=args.dtype,
        device=device,
        constrained=args.constrained,
        jump_forward=args.jump_forward,
        grid=grid,
        answer_sentences=args.sentences,
        target_label=args.target_label,
        background_bias=args.background_bias,
        question_style=args.question_style,
        visible=args.visible,
        trust_remote_code=args.trust_remote_code,
        **settings,
    )


def load_segmenter(
    args: argparse.Namespace,
    *,
    grid: Any,
    device: str | None,
    refiner: Any = None,
    prog: str = "text4seg",
    **settings: Any,
) -> Any:
    """`segmenter_from_args`, with a loading failure (an OSError other than `ModelSourceError`, whose
    message already names the source) said as `cannot load model MODEL: ...`, and each warning raised
    while loading (such as what `--visible crop` hides) printed as one `PROG: warning: ...` line."""
    from text4seg.infer.sources import ModelSourceError

    try:
        with warnings.catch_warnings(record=True) as raised:
            return segmenter_from_args(args, grid=grid, device=device, refiner=refiner, **settings)
    except ModelSourceError:
        raise
    except OSError as err:
        raise OSError(f"cannot load model {args.model}: {one_line(err)}") from err
    finally:
        for warning in raised:
            print(f"{prog}: warning: {one_line(warning.message, limit=1000)}", file=sys.stderr)
