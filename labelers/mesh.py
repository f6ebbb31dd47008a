"""The Q1 mesh of a cleaned wall mask: one element per wall pixel, with a smoothed boundary.

Nodes sit at pixel corners (coordinates in mm); border nodes are moved onto the smoothed wall
boundary (see "Boundary smoothing" in :mod:`labelers.fem`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["WallMesh", "build_mesh"]

#: Boundary smoothing keeps the Jacobian at every Gauss point above this fraction of a pixel's.
MIN_JACOBIAN = 0.25


@dataclass(frozen=True)
class WallMesh:
    """A Q1 mesh of a wall mask: one element per wall pixel, nodes at (smoothed) pixel corners.

    ``nodes``: float64 ``[n_nodes, 2]`` (x, y) in mm, x along columns and y along rows.
    ``elements``: int ``[n_elements, 4]`` node indices, counter-clockwise in (x, y).
    ``pixels``: int ``[n_elements, 2]`` the (row, column) of each element's pixel.
    ``lumen_edges``: int ``[n_edges, 2]`` node pairs of the lumen border, the lumen on their left.
    ``shape``: the mask's ``(H, W)``.
    """

    nodes: np.ndarray
    elements: np.ndarray
    pixels: np.ndarray
    lumen_edges: np.ndarray
    shape: tuple[int, int]


def _area_hessian(n: int) -> np.ndarray:
    """Constant Hessian H of a closed polygon's shoelace area; area = x.H.x / 2, d(area)/dx = H.x."""
    hessian = np.zeros((2 * n, 2 * n))
    for a in range(n):
        b = (a + 1) % n
        hessian[2 * a, 2 * b + 1] = hessian[2 * b + 1, 2 * a] = 0.5
        hessian[2 * a + 1, 2 * b] = hessian[2 * b, 2 * a + 1] = -0.5
    return hessian


_QUAD_AREA_HESSIAN = _area_hessian(4)
# One lumen edge (x1, y1, x2, y2) contributes (x1 y2 - x2 y1) / 2 to the lumen area.
_EDGE_AREA_HESSIAN = np.array([[0, 0, 0, 0.5], [0, 0, -0.5, 0], [0, -0.5, 0, 0], [0.5, 0, 0, 0]])

# Corner offsets (row, column) of a pixel's element nodes, counter-clockwise in (x, y) = (col, row).
_CORNERS = np.array([[0, 0], [0, 1], [1, 1], [1, 0]])
# Per neighbour offset (row, column): the element's edge on that side as local corner indices,
# directed so that the neighbour is on its left (the element is on the left of its own CCW edges).
_SIDES = (((-1, 0), [1, 0]), ((0, 1), [2, 1]), ((1, 0), [3, 2]), ((0, -1), [0, 3]))


def build_mesh(
    wall: np.ndarray,
    lumen: np.ndarray,
    pixel_mm: float = 0.1,
    smoothing_sigma_px: float = 1.0,
    max_shift: float = 0.5,
) -> WallMesh:
    """Mesh a cleaned ``wall`` with its ``lumen`` (bool ``[H, W]``, see :func:`segment_mask`).

    Node coordinates are in mm; ``smoothing_sigma_px = 0`` keeps the pixel staircase.
    """
    height, width = wall.shape
    rows, cols = np.nonzero(wall)
    corner_ids = (rows[:, None] + _CORNERS[:, 0]) * (width + 1) + cols[:, None] + _CORNERS[:, 1]
    node_ids, elements = np.unique(corner_ids, return_inverse=True)
    elements = elements.reshape(-1, 4)
    xy = np.stack([node_ids % (width + 1), node_ids // (width + 1)], axis=1).astype(float)

    outside = ~wall & ~lumen
    lumen_edges, outer_edges = [], []
    for (d_row, d_col), corners in _SIDES:
        neighbour = (rows + d_row, cols + d_col)  # inside the image: the wall avoids the frame
        edges = elements[:, corners]
        lumen_edges.append(edges[lumen[neighbour]])
        outer_edges.append(edges[outside[neighbour]])
    lumen_edges = np.concatenate(lumen_edges)
    outer_edges = np.concatenate(outer_edges)

    if smoothing_sigma_px > 0:
        xy = _smooth_boundary(
            xy, elements, [(lumen, lumen_edges), (outside, outer_edges)], smoothing_sigma_px, max_shift
        )
    return WallMesh(xy * pixel_mm, elements, np.stack([rows, cols], 1), lumen_edges, (height, width))


def _smooth_boundary(
    xy: np.ndarray,
    elements: np.ndarray,
    borders: Sequence[tuple[np.ndarray, np.ndarray]],
    sigma: float,
    max_shift: float,
) -> np.ndarray:
    """Move each border's nodes onto the 0.5 iso-contour of its Gaussian-smoothed region, then
    offset them along the border normal so that it encloses the region's pixel area again."""
    moved = xy.copy()
    for region, edges in borders:
        nodes = np.unique(edges)
        field = region.astype(float)
        value = ndimage.gaussian_filter(field, sigma, mode="nearest")
        grad_x = ndimage.gaussian_filter(field, sigma, order=(0, 1), mode="nearest")
        grad_y = ndimage.gaussian_filter(field, sigma, order=(1, 0), mode="nearest")
        point = xy[nodes].copy()
        for _ in range(4):  # Newton projection along the gradient of the smoothed indicator
            # Samples sit at pixel centres: (x, y) = (col + 0.5, row + 0.5).
            at = [point[:, 1] - 0.5, point[:, 0] - 0.5]
            phi = ndimage.map_coordinates(value, at, order=1, mode="nearest") - 0.5
            g = np.stack(
                [
                    ndimage.map_coordinates(grad_x, at, order=1, mode="nearest"),
                    ndimage.map_coordinates(grad_y, at, order=1, mode="nearest"),
                ],
                axis=1,
            )
            step = -phi[:, None] * g / np.maximum((g * g).sum(1), 1e-12)[:, None]
            point += _clip_length(step, max_shift)
        moved[nodes] = point
        # Smoothing shrinks a curved region a little (by sigma^2 * curvature / 2): offset the border
        # along its normal until it encloses its pixel area again.
        pixel_area = _border_area(xy, edges)[0]
        for _ in range(2):
            area, gradient = _border_area(moved, edges)
            moved += (pixel_area - area) / (gradient * gradient).sum() * gradient
        moved[nodes] = xy[nodes] + _clip_length(moved[nodes] - xy[nodes], max_shift)

    # Scale back the moves of nodes next to an element Gauss point whose Jacobian became small.
    for _ in range(8):
        bad = elements[_gauss_point_jacobians(moved[elements]) < MIN_JACOBIAN]
        if not len(bad):
            return moved
        moved[bad] = 0.5 * (moved[bad] + xy[bad])
    moved[bad] = xy[bad]
    return moved


def _border_area(xy: np.ndarray, edges: np.ndarray) -> tuple[float, np.ndarray]:
    """Signed area enclosed by oriented border edges and its gradient ``[n_nodes, 2]``."""
    ends = xy[edges].reshape(-1, 4)
    gradient_of_edges = ends @ _EDGE_AREA_HESSIAN
    area = 0.5 * (ends * gradient_of_edges).sum()
    gradient = np.zeros_like(xy)
    np.add.at(gradient, edges, gradient_of_edges.reshape(-1, 2, 2))
    return float(area), gradient


def _clip_length(vectors: np.ndarray, limit: float) -> np.ndarray:
    """Scale the rows of ``vectors`` down to at most ``limit`` long."""
    length = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors * np.minimum(1.0, limit / np.maximum(length, 1e-300))


def _gauss_point_jacobians(quads: np.ndarray) -> np.ndarray:
    """det(dX/dxi) at the 2x2 Gauss points nearest each corner of quads ``[n, 4, 2]``, in units of
    an undistorted square's (a pixel in pixel units has 1).

    The Jacobian of a bilinear map is linear in (xi, eta), so its value at the Gauss point
    (+-1, +-1)/sqrt(3) is the mean of the corner values plus 1/sqrt(3) of the corner's deviation.
    """
    forward = np.roll(quads, -1, axis=1) - quads
    backward = np.roll(quads, 1, axis=1) - quads
    corners = forward[..., 0] * backward[..., 1] - forward[..., 1] * backward[..., 0]
    mean = corners.mean(axis=1, keepdims=True)
    return mean + (corners - mean) / np.sqrt(3.0)
