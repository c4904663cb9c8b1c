"""The contract that data, training, inference and evaluation share (numpy, PIL and pycocotools; no torch).

* `records`: the one record schema (`record_features`) and its accessors (`split_record`, `answer_text`,
  `ground_truth`, `query_of`, `encode_counts` / `decode_counts` for the full-resolution masks);
* `templates`: the question and answer wording of the records, and so of the questions at inference;
* `images`: the one image reader (`load_image`, `read_record_image`) with its one orientation rule
  (EXIF applied: images are used as a viewer shows them) and the library's pixel limit;
* `asking`: how a model must be asked (`Asking`: grid, target label, answer form, question,
  upsampling, background bias), saved beside a model as ``text4seg.json``.

Arrows: codec <- protocol <- data, train, infer, eval.
"""

from .asking import SETTINGS_FILE, Asking, load_settings, settings_from_records, write_settings
from .images import MAX_IMAGE_PIXELS, ImageReadError, check_pixels, load_image, read_record_image
from .records import (
    RecordError,
    Truth,
    answer_text,
    decode_counts,
    encode_counts,
    ground_truth,
    query_of,
    question_text,
    record_features,
    record_id,
    split_record,
)

__all__ = [
    "MAX_IMAGE_PIXELS",
    "SETTINGS_FILE",
    "Asking",
    "ImageReadError",
    "RecordError",
    "Truth",
    "answer_text",
    "check_pixels",
    "decode_counts",
    "encode_counts",
    "ground_truth",
    "load_image",
    "load_settings",
    "query_of",
    "question_text",
    "read_record_image",
    "record_features",
    "record_id",
    "settings_from_records",
    "split_record",
    "write_settings",
]
