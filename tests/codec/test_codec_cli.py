import numpy as np
from PIL import Image

from text4seg.cli import main


def test_encode_then_decode_through_the_cli(tmp_path, capsys):
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 8:24] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert main(["encode", str(tmp_path / "m.png"), "red square", "--grid", "8"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("others *8\n others *8\n others *1| red square *2| others *5\n")
    (tmp_path / "t.txt").write_text(text)
    out_png = tmp_path / "back.png"
    assert (
        main(
            [
                "decode",
                str(tmp_path / "t.txt"),
                "--grid",
                "8",
                "--strict",
                "--out",
                str(out_png),
                "--size",
                "64x64",
            ]
        )
        == 0
    )
    back = np.asarray(Image.open(out_png)) > 0
    assert (back & (mask > 0)).sum() / (back | (mask > 0)).sum() > 0.8


def test_strict_decode_failure_exits_nonzero(tmp_path, capsys):
    (tmp_path / "bad.txt").write_text("others *3\n")
    assert main(["decode", str(tmp_path / "bad.txt"), "--grid", "4", "--strict"]) == 1
    assert "expected 4 rows" in capsys.readouterr().err
