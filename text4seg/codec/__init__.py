"""The descriptor codec: masks <-> label grids <-> R-RLE text. Pure numpy and the standard library
(`method="guided"` upsampling imports OpenCV on first use)."""

from .descriptor import Descriptor, decode, encode_label_map, encode_mask, extract_segments, format_answer
from .format import MAX_GRID_SIDE, TEXT4SEG, DescriptorFormat, LabelError, check_label
from .grid import (
    MAX_PIXELS,
    UP_METHODS,
    as_image_size,
    grid_to_mask,
    label_map_to_grid,
    mask_to_box,
    mask_to_grid,
)
from .rrle import (
    DescriptorParseError,
    Repair,
    check_labels,
    descriptor_grid_size,
    grid_to_cell_text,
    grid_to_text,
    parse_lenient,
    parse_strict,
)

__all__ = [
    "MAX_GRID_SIDE",
    "MAX_PIXELS",
    "UP_METHODS",
    "TEXT4SEG",
    "Descriptor",
    "DescriptorFormat",
    "DescriptorParseError",
    "LabelError",
    "Repair",
    "as_image_size",
    "check_label",
    "check_labels",
    "decode",
    "descriptor_grid_size",
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
    "parse_lenient",
    "parse_strict",
]
