"""Mammogram preparation the MIAS literature relies on, on one full-resolution film.

- :func:`breast_mask`: background and film-label removal. Film is near black outside the breast, but
  scanner labels, tape and edge artefacts are bright blobs apart from it: a low threshold, a
  morphological opening that cuts the thin film edges joining them to the breast, then the largest
  8-connected component (the breast), its holes filled (``scipy.ndimage``). A bright film edge lying
  flush against the chest wall over its whole length stays.
- :func:`chest_wall_left`: every breast turned to one side. The chest wall is the side of the
  image where the breast is widest, found from the mask's mass in the left and right halves.
- :func:`bounding_box`: the breast's rows and columns, for cropping a whole-image sample.
- :func:`equalise`: contrast-limited adaptive histogram equalisation (CLAHE, scikit-image's
  ``equalize_adapthist``), applied inside the breast only; the background stays 0.

:func:`prepare` runs them in that order and returns the film with its mask and whether it was flipped,
so lesion coordinates can be mapped with it (:func:`flip_column`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Prepared", "bounding_box", "breast_mask", "chest_wall_left", "equalise", "flip_column", "prepare"]

# Grey level (0..255) above which a pixel may be breast. MIAS film background sits at 0-10 and the
# fatty periphery of a breast at 30-60, so a level of 20 keeps the skin line and drops the film.
BACKGROUND_LEVEL = 20


@dataclass(frozen=True)
class Prepared:
    """A prepared film: ``image`` ``(H, W)`` uint8, ``mask`` ``(H, W)`` bool (the breast; all True
    when not segmented) and ``flipped`` (mirrored left-right, so a column ``c`` of the original film
    is ``W - 1 - c`` here)."""

    image: NDArray[np.uint8]
    mask: NDArray[np.bool_]
    flipped: bool


def breast_mask(image: NDArray[np.uint8], level: int = BACKGROUND_LEVEL, *, scale: int = 4,
                opening: int = 7) -> NDArray[np.bool_]:
    """The breast: ``(H, W)`` bool. Found on the film averaged over ``scale`` x ``scale`` blocks:
    brighter than ``level``, opened with an ``opening``-block square (which cuts the thin bright
    film edges that join labels to the breast), the largest 8-connected component, holes filled,
    then repeated back to full size. An image with nothing above ``level`` gives an all-False mask."""
    from scipy import ndimage

    h, w = image.shape
    hh, ww = -(-h // scale) * scale, -(-w // scale) * scale
    padded = np.zeros((hh, ww), dtype=np.float32)
    padded[:h, :w] = image
    small = padded.reshape(hh // scale, scale, ww // scale, scale).mean(axis=(1, 3)) > level
    if opening > 1:
        small = ndimage.binary_opening(small, structure=np.ones((opening, opening), dtype=bool))
    labels, n = ndimage.label(small, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros((h, w), dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    region = ndimage.binary_fill_holes(labels == int(sizes.argmax()))
    full = np.repeat(np.repeat(np.asarray(region, dtype=bool), scale, 0), scale, 1)
    return np.ascontiguousarray(full[:h, :w])


def chest_wall_left(mask: NDArray[np.bool_]) -> bool:
    """True when the breast's mass lies in the image's left half (the chest wall on the left)."""
    half = mask.shape[1] // 2
    return int(mask[:, :half].sum()) >= int(mask[:, half:].sum())


def bounding_box(mask: NDArray[np.bool_]) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (bottom and right exclusive) of the mask; the whole image when
    the mask is empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return 0, mask.shape[0], 0, mask.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def equalise(image: NDArray[np.uint8], mask: NDArray[np.bool_], clip_limit: float) -> NDArray[np.uint8]:
    """CLAHE with ``clip_limit`` (scikit-image's, in (0, 1]; 8x8 tiles) inside ``mask``; 0 outside."""
    from skimage.exposure import equalize_adapthist

    out = equalize_adapthist(image, clip_limit=clip_limit)
    return np.where(mask, np.rint(out * 255.0), 0).astype(np.uint8)


def flip_column(col: int, width: int, flipped: bool) -> int:
    """A column of the original film as a column of the prepared one."""
    return width - 1 - col if flipped else col


def prepare(image: NDArray[np.uint8], *, segment: bool, orient: bool, clahe: float) -> Prepared:
    """``image`` ``(H, W)`` uint8 -> :class:`Prepared`: the background and labels set to 0
    (``segment``), mirrored so the chest wall is on the left (``orient``), CLAHE inside the breast
    (``clahe`` > 0, the clip limit). Each step is skipped when off; the mask is always computed for
    ``orient`` and CLAHE, and is the whole image unless ``segment``."""
    mask = breast_mask(image) if (segment or orient or clahe > 0) else np.ones(image.shape, dtype=bool)
    if not mask.any():  # nothing but background: keep the film as it is
        mask = np.ones(image.shape, dtype=bool)
    flipped = orient and not chest_wall_left(mask)
    if flipped:
        image, mask = image[:, ::-1], mask[:, ::-1]
    breast = mask if segment else np.ones_like(mask)
    if segment:
        image = np.where(mask, image, 0).astype(np.uint8)
    if clahe > 0:
        image = equalise(image, breast, clahe)
    return Prepared(np.ascontiguousarray(image), np.ascontiguousarray(breast), flipped)
