"""Importing the training and model packages (and the CLI module) stays cheap: no torch, no transformers."""

from __future__ import annotations

import subprocess
import sys


def test_packages_import_lazily():
    code = (
        "import sys, text4seg.train, text4seg.train.cli, text4seg.models; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
