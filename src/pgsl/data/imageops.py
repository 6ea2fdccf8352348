"""Shared pixel preparation for the large medical images (MIAS, DICOM)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a 2-D image to a centred square, then resize it to ``size x size`` (uint8).

    Mammograms have a dark background, so padding with 0 adds no structure. Float input is taken to
    be in [0, 1]; uint8 input as is.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    h, w = image.shape
    side = max(h, w)
    if h != w:
        canvas = np.zeros((side, side), dtype=np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        canvas[top : top + h, left : left + w] = image
        image = canvas
    if side != size:
        # BILINEAR in Pillow widens its kernel when shrinking, i.e. it anti-aliases
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    return image
