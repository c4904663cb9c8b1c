"""text4seg: segmentation as text."""
