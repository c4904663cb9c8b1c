"""Execute the three notebooks with nbclient, their parameter cells set to tiny, offline values.

Also checks that the notebooks are committed without outputs and start with a `parameters` cell.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ("01_descriptors", "02_datasets", "03_predictions")


def _load(name: str):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _run(name: str, params: dict, tmp_path: Path):
    book = _load(name)
    first = book.cells[0]
    assert "parameters" in first.metadata.get("tags", []), f"{name}: first cell is not tagged 'parameters'"
    book.cells.insert(1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items())))
    client = nbclient.NotebookClient(
        book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    return book


def _text(book) -> str:
    parts = []
    for cell in book.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(json.dumps(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def _images(book) -> int:
    return sum("image/png" in o.get("data", {}) for c in book.cells for o in c.get("outputs", []))


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name):
    book = _load(name)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{name}: outputs committed"


def test_01_descriptors(tmp_path):
    book = _run("01_descriptors", {"seed": 3}, tmp_path)
    text = _text(book)
    assert "round-trip IoU" in text and "repaired:" in text and "strict:" in text
    assert _images(book) >= 4


def test_01_descriptors_on_a_user_image(tmp_path):
    import numpy as np
    from PIL import Image

    mask = np.zeros((60, 80), dtype=np.uint8)
    mask[10:40, 20:50] = 255
    Image.fromarray(np.full((60, 80, 3), 90, np.uint8)).save(tmp_path / "im.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    params = {"image_path": str(tmp_path / "im.png"), "mask_path": str(tmp_path / "mask.png")}
    text = _text(_run("01_descriptors", params, tmp_path))
    assert "label 'object'" in text


def test_02_datasets(tmp_path):
    book = _run("02_datasets", {"num_images": 10, "out_dir": str(tmp_path / "data")}, tmp_path)
    text = _text(book)
    assert "mean tokens: R-RLE" in text and "user:" in text
    assert (tmp_path / "data" / "refcoco").is_dir()
    assert _images(book) >= 2


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    """An untrained demo model saved like `text4seg demo` saves it (the notebook only needs to load it)."""
    from text4seg.demo_cli import demo_module

    demo_module()  # the example lives in the checkout's examples/ (put on sys.path)
    from demo.model import make_model
    from demo.prepare import asking_of, load_records, prepare
    from demo.settings import load

    out = tmp_path_factory.mktemp("demo_model")
    config, demo = load(["demo.num_images=8", "demo.curriculum=2", "demo.color_stage=2"])
    prepare(out, config, demo, progress=False)
    model, processor = make_model(config, demo, load_records(out, "train"))
    model.save_pretrained(out / "model")
    processor.save_pretrained(out / "model")
    asking_of(demo).save(out / "model")
    return out / "model"


def test_03_predictions(tmp_path, demo_model):
    params = {"model_path": str(demo_model), "num_images": 3, "worst": 2}
    book = _run("03_predictions", params, tmp_path)
    text = _text(book)
    assert "gIoU over 3 expressions" in text and "skipping refinement" in text
    assert _images(book) >= 2
