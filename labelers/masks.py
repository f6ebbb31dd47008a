"""Cleaning of vessel-wall masks for the FEM labeler: specks, diagonal contacts, voids, the lumen.

:func:`clean_mask` says what is cleaned and what is refused (with a
:class:`~labelers.base.LabelError`); :func:`segment_mask` also finds the lumen the pressure acts on.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from labelers.base import LabelError

__all__ = ["clean_mask", "segment_mask"]

#: A wall piece is a speck (and dropped) when smaller than this fraction of the largest piece ...
SPECK_FRACTION = 0.05
#: ... or than this many pixels.
SPECK_PIXELS = 10

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
_EIGHT_CONNECTED = ndimage.generate_binary_structure(2, 2)
_NEIGHBOURS = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])


def segment_mask(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clean a wall mask and find its lumen: ``(wall, lumen)`` bool ``[H, W]``, or raise LabelError.

    See :func:`clean_mask` for the rules. The lumen is the largest background region enclosed by
    the wall; other enclosed background regions are voids and are filled.
    """
    wall = np.asarray(mask)
    if wall.ndim != 2:
        raise LabelError(f"mask must be 2-D, got shape {wall.shape}")
    wall = wall != 0
    if not wall.any():
        raise LabelError("empty mask")
    wall = _drop_specks(wall)
    wall = _join_diagonal_contacts(wall)
    if wall[0].any() or wall[-1].any() or wall[:, 0].any() or wall[:, -1].any():
        raise LabelError("wall touches the image border")
    # The frame is all background and 4-connected, so the outside is the region holding pixel (0, 0).
    regions, _ = ndimage.label(~wall, _FOUR_CONNECTED)
    outside = regions[0, 0]
    sizes = np.bincount(regions.ravel())
    sizes[[0, outside]] = 0
    if not sizes.any():
        raise LabelError("mask has no enclosed lumen (open ring)")
    lumen = regions == np.argmax(sizes)
    wall = ~lumen & (regions != outside)
    return wall, lumen


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Return the cleaned bool wall mask, or raise LabelError saying why it cannot be labeled.

    Cleaning: nonzero pixels are wall; wall pieces (8-connected) smaller than 5 % of the largest or
    than 10 pixels are dropped as specks; pixels touching only diagonally are joined by adding one
    wall pixel (so no mesh node is shared by two elements only at a corner); voids (enclosed
    background regions other than the largest one, the lumen) are filled.
    Refused: an empty mask, several wall pieces of comparable size, a wall touching the image border,
    a wall that encloses no lumen (an open ring).
    """
    return segment_mask(mask)[0]


def _drop_specks(wall: np.ndarray) -> np.ndarray:
    """Keep the largest 8-connected wall piece; refuse if another one is too large to be a speck."""
    pieces, count = ndimage.label(wall, _EIGHT_CONNECTED)
    if count == 1:
        return wall
    sizes = np.bincount(pieces.ravel())[1:]
    kept = np.flatnonzero((sizes >= SPECK_FRACTION * sizes.max()) & (sizes >= SPECK_PIXELS))
    if len(kept) > 1:
        listed = ", ".join(str(n) for n in sorted(sizes[kept], reverse=True))
        raise LabelError(f"mask has {len(kept)} separate wall pieces ({listed} px): expected one vessel wall")
    return pieces == np.argmax(sizes) + 1


def _join_diagonal_contacts(wall: np.ndarray) -> np.ndarray:
    """Add wall pixels until no 2x2 block is a checkerboard (wall pixels touching only diagonally).

    Of the two background pixels of such a block, the one with more wall 4-neighbours (not on the
    image frame, if possible) becomes wall. Afterwards 4- and 8-connectivity agree for both the
    wall and the background, and every mesh node on the border is on exactly one border loop.
    """
    wall = wall.copy()
    frame = np.zeros_like(wall)
    frame[[0, -1], :] = frame[:, [0, -1]] = True
    while True:
        a, b, c, d = wall[:-1, :-1], wall[:-1, 1:], wall[1:, :-1], wall[1:, 1:]
        main = a & d & ~b & ~c
        anti = b & c & ~a & ~d
        if not (main.any() or anti.any()):
            return wall
        neighbours = ndimage.convolve(wall.astype(int), _NEIGHBOURS, mode="constant")
        score = neighbours - 10 * frame
        for i, j in zip(*np.nonzero(main | anti)):
            if main[i, j]:
                first, second = (i, j + 1), (i + 1, j)
            else:
                first, second = (i, j), (i + 1, j + 1)
            if wall[first] or wall[second]:
                continue  # already joined by an earlier pixel of this sweep
            wall[first if score[first] >= score[second] else second] = True
