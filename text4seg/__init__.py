"""text4seg: teach any Hugging Face multimodal LLM to segment images by writing the mask as text.

Importing the package loads only the codec (numpy and the standard library); models, training and
inference live in sub-packages that import torch when they are used.
"""

from .codec import (
    TEXT4SEG,
    Descriptor,
    DescriptorFormat,
    DescriptorParseError,
    LabelError,
    Repair,
    decode,
    encode_label_map,
    encode_mask,
    extract_segments,
    format_answer,
    grid_to_cell_text,
    grid_to_mask,
    grid_to_text,
    label_map_to_grid,
    mask_to_box,
    mask_to_grid,
)

__version__ = "0.1.0"

__all__ = [
    "TEXT4SEG",
    "Descriptor",
    "DescriptorFormat",
    "DescriptorParseError",
    "LabelError",
    "Repair",
    "__version__",
    "decode",
    "encode_label_map",
    "encode_mask",
    "extract_segments",
    "format_answer",
    "grid_to_cell_text",
    "grid_to_mask",
    "grid_to_text",
    "label_map_to_grid",
    "mask_to_box",
    "mask_to_grid",
]
