"""The README's codec example runs as written, and every command it names exists with --help."""

import re
from pathlib import Path

import pytest

from text4seg.cli import main

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


def test_codec_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    codec = next(b for b in blocks if "encode_mask" in b)
    namespace: dict = {}
    exec(compile(codec, "README.md", "exec"), namespace)
    d = namespace["d"]
    assert d.ok and d.labels == ["others", "red circle"]
    assert namespace["full"].shape == (480, 640) and namespace["full"].any()


COMMANDS = sorted(set(re.findall(r"`?text4seg (build|train|predict|evaluate|encode|decode|demo)\b", README)))


def test_readme_names_every_command():
    assert COMMANDS == ["build", "decode", "demo", "encode", "evaluate", "predict", "train"]


@pytest.mark.parametrize("command", COMMANDS)
def test_each_readme_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: text4seg " + command in capsys.readouterr().out
