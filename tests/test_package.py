import subprocess
import sys

import text4seg


def test_import_does_not_load_torch_or_transformers():
    code = "import sys, text4seg, text4seg.codec, text4seg.cli; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_names():
    for name in [
        "TEXT4SEG",
        "encode_mask",
        "encode_label_map",
        "decode",
        "Descriptor",
        "extract_segments",
        "DescriptorParseError",
        "DescriptorFormat",
    ]:
        assert hasattr(text4seg, name), name
    assert text4seg.TEXT4SEG.grid == (16, 16) and text4seg.TEXT4SEG.background == "others"
