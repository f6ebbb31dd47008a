"""Finite-element structural-stress labeler for IVUS vessel-wall masks.

:class:`FEMLabeler` maps a binary vessel-wall segmentation mask ``[H, W]`` (nonzero = wall pixel)
to the von Mises Cauchy stress in kPa on each wall pixel (``float32 [H, W]``, 0 off the wall) of
the wall loaded by the lumen (blood) pressure: the quasi-static systolic state of the paper's
labeling tool (appendix A.2; VasFEM after Teng et al., 2014).

Formulation
-----------
* Units and geometry: one bilinear quadrilateral (Q1) per wall pixel, nodes at pixel corners, node
  coordinates in mm (``x = column * pixel_mm``, ``y = row * pixel_mm``); stresses in kPa, forces
  per unit thickness in kPa*mm. A pixel's stress is its element's, at the element centre. Pressure
  loading of a hyperelastic body gives stresses independent of its size, so labels do not depend on
  ``pixel_mm``.
* Boundary smoothing: a pixel staircase overestimates the stress (by 4-12 % on an annulus). Each
  border node is moved onto the 0.5 iso-contour of the Gaussian-smoothed (``smoothing_sigma_px``)
  indicator of the region it borders: the lumen for lumen-border nodes, the outside for outer-border
  nodes (so thin walls do not thin). Then each border is offset along its normal until it encloses
  its pixel area again, undoing the shrinkage (``sigma^2 * curvature / 2``) of smoothing: the
  labeler keeps the segmented lumen and vessel areas. Moves are at most 0.5 px, and scaled back
  where an element's Jacobian would fall below 1/4 of a pixel's at a Gauss point. Interior nodes
  stay at pixel corners, so elements and pixels still correspond one to one.
* Plane strain: ``F = [[F2d, 0], [0, 1]]``, ``J = det F2d``, ``I1 = |F2d|^2 + 1``.
* Material: modified Mooney-Rivlin ``W = c1 (I1b - 3) + D1 [exp(D2 (I1b - 3)) - 1] + U(J)``,
  ``I1b = J^(-2/3) I1``, c1 = 0.138 kPa, D1 = 3.833 kPa, D2 = 18.803: initial shear modulus
  ``mu = 2 (c1 + D1 D2)`` = 144.4 kPa. The incompressibility constraint (the paper's Lagrange
  multiplier ``kappa (J - 1)``) is enforced by a penalty ``U(J) = kappa/2 (J - 1)^2``,
  ``kappa = bulk_ratio * mu`` with ``bulk_ratio`` = 1000 (Poisson's ratio 0.4995). At wall stresses
  of ~100 kPa the volume then changes by ~1e-3, negligible at pixel resolution (the thick-cylinder
  solution differs from the incompressible one by O(mu/kappa)), while larger ratios only worsen the
  conditioning of the tangent. The von Mises stress does not contain the pressure itself.
* Anti-locking: Q1/P0 mean dilatation (Simo, Taylor and Pister 1985). ``U`` acts on the element's
  mean dilatation ``Jbar = v_e / V_e`` (deformed over reference area; the shoelace formula, exact
  for bilinear quads), which is the mixed u/p formulation with an element-wise constant pressure
  ``p = kappa (Jbar - 1)`` condensed out statically. The isochoric part uses 2x2 Gauss points. A
  displacement-only Q1 model would lock at this Poisson's ratio.
* Load: the lumen pressure acts on the lumen border only (between the wall and the enclosed
  background region; not on the outer border) as a follower load on the deformed configuration.
  On a closed border it is conservative with potential ``-p * A_lumen(x)``, ``A_lumen`` the deformed
  lumen area, so the equilibrium minimises ``Pi(u) = sum_e [int W_iso dV + V_e U(Jbar_e)] - p A_lumen``
  and the tangent, including the load stiffness ``-p d2A_lumen/dx2``, is its symmetric Hessian.
* Rigid-body motion: the load is self-equilibrated, so exactly three displacement components are
  pinned: both at the left-most node of the thick part of the wall, and at the node of that part
  farthest from it, the component that a rotation about the first node moves most. Their
  reactions vanish at equilibrium, so they do not disturb the stresses.
* Solution: Newton's method with load stepping, starting with the full load
  (``initial_load_steps`` = 1), and a line search on the slope of ``Pi`` (the exponential
  stiffening makes full Newton steps overshoot); where the tangent is not positive definite (far
  from equilibrium) its diagonal is raised until it is. Converged when the residual is below
  ``newton_rtol`` times the load. When Newton fails (``max_newton_iter`` iterations, or no step
  keeps ``J > 0``) the load step is halved, and after ``max_step_cuts`` cuts a LabelError "did not
  converge" is raised; a step that converges quickly doubles the next one. Element loops are
  vectorised with numpy and assembled into a precomputed block-sparsity pattern; each Newton step
  is one banded Cholesky solve in reverse Cuthill-McKee order. A 64x64 mask with 1-2k wall pixels
  takes ~0.1 s (Mooney-Rivlin, 16 kPa; ~8 Newton steps) or ~0.03 s (linear) on one core.
* ``material="linear"``: the small-strain limit of the same model: the tangent at ``u = 0`` without
  load stiffness (shear modulus ``mu``, the same ``kappa`` and mean dilatation), one linear solve.
* Output: the von Mises stress of the 3-D Cauchy stress (including sigma_zz of plane strain), kPa.

Masks that cannot be labeled raise :class:`~labelers.base.LabelError`; :func:`clean_mask` lists
what is cleaned and what is refused. The vectorised assembly is checked against a scikit-fem
reference (:func:`reference_residual`, :func:`reference_linear_stiffness`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, fields

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from scipy.linalg import cho_solve_banded, cholesky_banded
from scipy.sparse.csgraph import reverse_cuthill_mckee
from tqdm.auto import tqdm

from labelers.base import LabelError
from labelers.cache import LabelCache

try:
    import threadpoolctl
except ImportError:  # optional: only used to keep BLAS single-threaded
    threadpoolctl = None

__all__ = [
    "FEM_VERSION",
    "SOLVER_OPTIONS",
    "BatchLabels",
    "FEMLabeler",
    "FEMParams",
    "MooneyRivlin",
    "WallMesh",
    "WallModel",
    "build_mesh",
    "clean_mask",
    "reference_linear_stiffness",
    "reference_residual",
    "segment_mask",
]

FEM_VERSION = "1.0"

MATERIALS = ("mooney-rivlin", "linear")

#: A wall piece is a speck (and dropped) when smaller than this fraction of the largest piece ...
SPECK_FRACTION = 0.05
#: ... or than this many pixels.
SPECK_PIXELS = 10
#: Boundary smoothing keeps the Jacobian at every Gauss point above this fraction of a pixel's.
MIN_JACOBIAN = 0.25
#: Relative increases of the tangent's diagonal tried until it is positive definite.
TANGENT_SHIFTS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: Residual evaluations allowed per Newton line search.
LINE_SEARCH_STEPS = 8
#: label_batch writes new results to the cache in groups of this many.
_CACHE_FLUSH = 64
#: label_batch starts one worker process per this many masks to solve, at most: starting a
#: process costs about as much as solving 10-20 masks, so small batches are solved in-process.
MASKS_PER_WORKER_MIN = 16

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
_EIGHT_CONNECTED = ndimage.generate_binary_structure(2, 2)
_NEIGHBOURS = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])


# --------------------------------------------------------------------------------------------------
# Mask cleaning
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Mesh
# --------------------------------------------------------------------------------------------------


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
            g = np.stack([ndimage.map_coordinates(grad_x, at, order=1, mode="nearest"),
                          ndimage.map_coordinates(grad_y, at, order=1, mode="nearest")], axis=1)
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


# --------------------------------------------------------------------------------------------------
# Material
# --------------------------------------------------------------------------------------------------


# F is flattened as (F11, F12, F21, F22). cof F = J F^-T = (F22, -F21, -F12, F11) = _COF @ F.
_COF = np.array([[0, 0, 0, 1], [0, 0, -1, 0], [0, -1, 0, 0], [1, 0, 0, 0]], dtype=float)
_IDENTITY = np.array([1.0, 0.0, 0.0, 1.0])


@dataclass(frozen=True)
class MooneyRivlin:
    """The modified Mooney-Rivlin material of the paper (kPa), with bulk modulus ``bulk_ratio * mu``."""

    c1: float = 0.138
    d1: float = 3.833
    d2: float = 18.803
    bulk_ratio: float = 1000.0

    @property
    def shear_modulus(self) -> float:
        """Initial (small-strain) shear modulus ``mu = 2 (c1 + D1 D2)`` in kPa."""
        return 2.0 * (self.c1 + self.d1 * self.d2)

    @property
    def bulk_modulus(self) -> float:
        """``kappa`` in kPa."""
        return self.bulk_ratio * self.shear_modulus

    def isochoric(self, f: np.ndarray, tangent: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """First Piola stress ``dW_iso/dF`` ``[..., 4]`` and its tangent ``[..., 4, 4]`` at F ``[..., 4]``."""
        cof = f @ _COF
        j = f[..., 0] * f[..., 3] - f[..., 1] * f[..., 2]
        i1 = (f * f).sum(-1) + 1.0
        j23 = j ** (-2.0 / 3.0)
        growth = self.d1 * self.d2 * np.exp(self.d2 * (i1 * j23 - 3.0))
        dpsi = self.c1 + growth
        a = (2.0 * j23)[..., None]
        b = (2.0 / 3.0 * i1 * j23 / j)[..., None]
        g = a * f - b * cof  # d(I1b)/dF
        stress = dpsi[..., None] * g
        if not tangent:
            return stress, None
        dg = (  # d2(I1b)/dF2
            a[..., None] * np.eye(4)
            - (4.0 / 3.0 * j23 / j)[..., None, None] * (_outer(f, cof) + _outer(cof, f))
            + (10.0 / 9.0 * i1 * j23 / j**2)[..., None, None] * _outer(cof, cof)
            - b[..., None] * _COF
        )
        moduli = (self.d2 * growth)[..., None, None] * _outer(g, g) + dpsi[..., None, None] * dg
        return stress, moduli

    def von_mises(self, f: np.ndarray) -> np.ndarray:
        """Von Mises stress of the 3-D Cauchy stress at plane-strain F ``[..., 4]`` (kPa)."""
        j = f[..., 0] * f[..., 3] - f[..., 1] * f[..., 2]
        i1 = (f * f).sum(-1) + 1.0
        j23 = j ** (-2.0 / 3.0)
        dpsi = self.c1 + self.d1 * self.d2 * np.exp(self.d2 * (i1 * j23 - 3.0))
        # Deviatoric Cauchy stress 2 psi' J^(-5/3) (b - I1/3), b = F F^T with b33 = 1.
        b11 = f[..., 0] ** 2 + f[..., 1] ** 2
        b22 = f[..., 2] ** 2 + f[..., 3] ** 2
        b12 = f[..., 0] * f[..., 2] + f[..., 1] * f[..., 3]
        scale = 2.0 * dpsi * j23 / j
        return scale * _von_mises_of_deviator(b11 - i1 / 3, b22 - i1 / 3, 1 - i1 / 3, b12)

    def linear_von_mises(self, grad_u: np.ndarray) -> np.ndarray:
        """Small-strain von Mises stress ``2 mu |dev eps|_vM`` at displacement gradients ``[..., 4]``."""
        e11, e22 = grad_u[..., 0], grad_u[..., 3]
        e12 = 0.5 * (grad_u[..., 1] + grad_u[..., 2])
        trace = e11 + e22
        return 2.0 * self.shear_modulus * _von_mises_of_deviator(
            e11 - trace / 3, e22 - trace / 3, -trace / 3, e12
        )


def _outer(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Batched outer product ``x_i y_j`` over the last axis."""
    return x[..., :, None] * y[..., None, :]


def _von_mises_of_deviator(s11: np.ndarray, s22: np.ndarray, s33: np.ndarray, s12: np.ndarray) -> np.ndarray:
    return np.sqrt(1.5 * (s11**2 + s22**2 + s33**2 + 2.0 * s12**2))


# --------------------------------------------------------------------------------------------------
# Vectorised Q1/P0 model
# --------------------------------------------------------------------------------------------------


_GAUSS = np.array([-1.0, 1.0]) / np.sqrt(3.0)
_XI = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float)  # reference corners, CCW


def _shape_gradients(points: np.ndarray) -> np.ndarray:
    """dN_a/dxi of the Q1 shape functions at reference points ``[n, 2]`` -> ``[n, 4, 2]``."""
    xi, eta = points[:, None, 0], points[:, None, 1]
    return 0.25 * np.stack([_XI[:, 0] * (1 + _XI[:, 1] * eta), _XI[:, 1] * (1 + _XI[:, 0] * xi)], -1)


def _gradient_operators(corners: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For Q1 elements with ``corners`` ``[e, 4, 2]``, at reference ``points`` ``[q, 2]``: B
    ``[e, q, 4, 8]`` with grad(u)_flat = B u_e, and the Jacobian determinants det(dX/dxi) ``[e, q]``."""
    dn_dxi = _shape_gradients(points)  # [q, a, k]
    jac = np.matmul(corners.transpose(0, 2, 1)[:, None], dn_dxi)  # [e, q, i, k] = dX_i/dxi_k
    det = jac[..., 0, 0] * jac[..., 1, 1] - jac[..., 0, 1] * jac[..., 1, 0]
    inverse = np.stack([jac[..., 1, 1], -jac[..., 0, 1], -jac[..., 1, 0], jac[..., 0, 0]], -1)
    inverse = inverse.reshape(det.shape + (2, 2)) / det[..., None, None]  # dxi_k/dX_j
    dn_dx = np.matmul(dn_dxi, inverse)  # [e, q, a, j]
    b = np.zeros(det.shape + (4, 8))
    for i in range(2):
        for j in range(2):
            b[..., 2 * i + j, i::2] = dn_dx[..., j]
    return b, det


class _InvalidState(Exception):
    """A displacement that inverts an element (J <= 0) or makes the stress non-finite."""


class WallModel:
    """Residual, tangent and stresses of the plane-strain Q1/P0 wall model, vectorised over elements.

    Displacements ``u`` are float64 ``[2 * n_nodes]`` in mm, interleaved ``(u_x, u_y)`` per node.
    The residual is the gradient of the total potential ``Pi(u)`` (see the module docstring) and the
    tangent its Hessian; ``pressure`` is the lumen pressure in kPa.
    """

    def __init__(self, mesh: WallMesh, material: MooneyRivlin) -> None:
        self.mesh = mesh
        self.material = material
        self.n_dofs = 2 * len(mesh.nodes)
        self.element_dofs = (2 * mesh.elements[:, :, None] + np.arange(2)).reshape(-1, 8)
        self.edge_dofs = (2 * mesh.lumen_edges[:, :, None] + np.arange(2)).reshape(-1, 4)
        self.x_edges = mesh.nodes[mesh.lumen_edges].reshape(-1, 4)
        corners = mesh.nodes[mesh.elements]
        # Element areas from coordinates relative to the element centre (no cancellation).
        centred = (corners - corners.mean(axis=1, keepdims=True)).reshape(-1, 8)
        self.area_gradients = centred @ _QUAD_AREA_HESSIAN  # dV_e/dX
        self.areas = 0.5 * (self.area_gradients * centred).sum(1)

        gauss = np.array([[xi, eta] for eta in _GAUSS for xi in _GAUSS])
        b_gauss, weights = _gradient_operators(corners, gauss)
        n_elements = len(corners)
        self.b_gauss = b_gauss.reshape(n_elements, -1, 8)  # [e, (q, m), d]: F_flat - I = B u_e
        self.weighted_bt = (b_gauss * weights[..., None, None]).reshape(n_elements, -1, 8).transpose(0, 2, 1)
        self.b_centre = _gradient_operators(corners, np.zeros((1, 2)))[0][:, 0]

        self.fixed = self._rigid_body_pins()
        self._build_pattern()

    def _rigid_body_pins(self) -> np.ndarray:
        """Three pinned dofs: both at the left-most node of the thick part of the wall, and one at
        the node of that part farthest from it. (On a thin appendage, such as a one-pixel spur,
        the pins would leave the rotation held only by the spur's bending stiffness.)"""
        mesh = self.mesh
        wall = np.zeros(mesh.shape, dtype=bool)
        wall[mesh.pixels[:, 0], mesh.pixels[:, 1]] = True
        depth = ndimage.distance_transform_edt(wall)[mesh.pixels[:, 0], mesh.pixels[:, 1]]
        candidates = np.unique(mesh.elements[depth >= 0.5 * depth.max()])
        nodes = mesh.nodes[candidates]
        first = candidates[np.lexsort((nodes[:, 1], nodes[:, 0]))[0]]
        second = candidates[np.argmax(np.linalg.norm(nodes - mesh.nodes[first], axis=1))]
        arm = mesh.nodes[second] - mesh.nodes[first]
        # A rotation about the first node moves the second along (-arm_y, arm_x): pin the larger one.
        component = 0 if abs(arm[1]) > abs(arm[0]) else 1
        return np.array(sorted([2 * first, 2 * first + 1, 2 * second + component]))

    def _build_pattern(self) -> None:
        """The tangent's sparsity as 2x2 node blocks (block CSR), the element/edge -> block maps, and
        the map of its free-dof part into LAPACK's lower band storage in reverse Cuthill-McKee order."""
        n_nodes = len(self.mesh.nodes)
        elements, edges = self.mesh.elements, self.mesh.lumen_edges
        element_pairs = (elements[:, :, None] * n_nodes + elements[:, None, :]).ravel()
        edge_pairs = (edges[:, :, None] * n_nodes + edges[:, None, :]).ravel()
        pairs, element_to_block = np.unique(element_pairs, return_inverse=True)
        # An edge's nodes belong to one element, so its node pairs are blocks already.
        self._to_block = np.concatenate([element_to_block, np.searchsorted(pairs, edge_pairs)])
        self._n_blocks = len(pairs)
        block_rows, self._block_cols = np.divmod(pairs, n_nodes)
        self._block_indptr = np.searchsorted(block_rows, np.arange(n_nodes + 1))

        graph = sp.csr_matrix(
            (np.ones(len(pairs)), self._block_cols, self._block_indptr), shape=(n_nodes, n_nodes)
        )
        dofs = (2 * reverse_cuthill_mckee(graph, symmetric_mode=True)[:, None] + np.arange(2)).ravel()
        self._band_dofs = dofs[~np.isin(dofs, self.fixed)]  # free dofs, in band order
        position = np.full(self.n_dofs, -1)
        position[self._band_dofs] = np.arange(len(self._band_dofs))
        # Entry (k, l) of block b couples dofs 2 I + k and 2 J + l; the block data is [b, 2 k + l].
        rows = position[(2 * block_rows[:, None] + [0, 0, 1, 1]).ravel()]
        cols = position[(2 * self._block_cols[:, None] + [0, 1, 0, 1]).ravel()]
        lower = (rows >= cols) & (cols >= 0)
        self._bandwidth = int((rows - cols)[lower].max())
        self._band_source = np.flatnonzero(lower)
        self._band_slots = (rows - cols)[lower] * len(self._band_dofs) + cols[lower]

    # ---- evaluation ------------------------------------------------------------------------------

    def residual(self, u: np.ndarray, pressure: float) -> np.ndarray:
        """dPi/du ``[n_dofs]``: internal forces minus the follower pressure load (kPa*mm)."""
        return self._evaluate(u, pressure, tangent=False)[0]

    def tangent(self, u: np.ndarray, pressure: float) -> sp.csr_matrix:
        """d2Pi/du2 ``[n_dofs, n_dofs]``, including the load stiffness of the follower pressure."""
        blocks = self._evaluate(u, pressure, tangent=True)[1].reshape(-1, 2, 2)
        shape = (self.n_dofs, self.n_dofs)
        return sp.bsr_matrix((blocks, self._block_cols, self._block_indptr), shape=shape).tocsr()

    def pressure_load(self, u: np.ndarray, pressure: float) -> np.ndarray:
        """Nodal forces ``p dA_lumen/du`` ``[n_dofs]`` of the lumen pressure at ``u`` (kPa*mm)."""
        forces = pressure * ((self.x_edges + u[self.edge_dofs]) @ _EDGE_AREA_HESSIAN)
        return np.bincount(self.edge_dofs.ravel(), forces.ravel(), self.n_dofs)

    def _evaluate(
        self, u: np.ndarray, pressure: float, tangent: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Residual ``[n_dofs]`` and, if asked, the tangent's 2x2 blocks ``[n_blocks, 4]``;
        raises _InvalidState where an element is inverted or a value is not finite."""
        material = self.material
        u_elements = u[self.element_dofs]
        f = _IDENTITY + (self.b_gauss @ u_elements[:, :, None]).reshape(len(u_elements), -1, 4)
        j = f[..., 0] * f[..., 3] - f[..., 1] * f[..., 2]
        # The area is quadratic in u: v_e - V_e = (dV_e/dX) . u + u . H . u / 2, exactly.
        area_change = u_elements @ _QUAD_AREA_HESSIAN
        volumetric_strain = ((self.area_gradients + 0.5 * area_change) * u_elements).sum(1) / self.areas
        area_gradient = self.area_gradients + area_change  # dv_e/dx
        if j.min() <= 0 or volumetric_strain.min() <= -1:
            raise _InvalidState("an element is inverted (J <= 0)")
        kappa = material.bulk_modulus
        volumetric_pressure = kappa * volumetric_strain  # kappa (Jbar - 1)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught just below
            stress, moduli = material.isochoric(f, tangent)
            forces = (self.weighted_bt @ stress.reshape(len(f), -1, 1))[..., 0]
        forces += volumetric_pressure[:, None] * area_gradient
        residual = np.bincount(self.element_dofs.ravel(), forces.ravel(), self.n_dofs)
        residual -= self.pressure_load(u, pressure)
        if not np.isfinite(residual).all():
            raise _InvalidState("non-finite stresses")
        if not tangent:
            return residual, None

        n_elements, n_points = f.shape[:2]
        b = self.b_gauss.reshape(n_elements, n_points, 4, 8)
        stiffness = self.weighted_bt @ (moduli @ b).reshape(n_elements, -1, 8)
        stiffness += (kappa / self.areas)[:, None, None] * _outer(area_gradient, area_gradient)
        stiffness += volumetric_pressure[:, None, None] * _QUAD_AREA_HESSIAN
        edge_stiffness = np.broadcast_to(-pressure * _EDGE_AREA_HESSIAN, (len(self.edge_dofs), 4, 4))
        # Element matrices as node-pair blocks, in the order of self._to_block.
        values = np.concatenate([
            stiffness.reshape(n_elements, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 4),
            edge_stiffness.reshape(-1, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 4),
        ])
        blocks = np.stack([np.bincount(self._to_block, values[:, k], self._n_blocks) for k in range(4)], 1)
        if not np.isfinite(blocks).all():
            raise _InvalidState("non-finite tangent")
        return residual, blocks

    def _factor(self, blocks: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """A solver ``rhs [n_dofs] -> x [n_dofs]`` for the tangent with ``blocks`` on the free dofs
        (``x`` is 0 on the pinned ones).

        Banded Cholesky in reverse Cuthill-McKee order: the tangent is symmetric, and positive
        definite at a stable equilibrium. Far from equilibrium it can be indefinite (the volumetric
        term ``kappa (Jbar - 1) d2v/dx2`` and the pressure load stiffness are); then its diagonal is
        increased by a growing fraction until it is positive definite, which keeps the Newton step a
        descent direction of the potential. Raises _InvalidState if that fails.
        """
        n_free = len(self._band_dofs)
        band = np.zeros((self._bandwidth + 1) * n_free)
        band[self._band_slots] = blocks.ravel()[self._band_source]
        band = band.reshape(-1, n_free)
        diagonal = band[0].copy()
        for shift in TANGENT_SHIFTS:
            band[0] = diagonal * (1.0 + shift)
            try:
                factor = cholesky_banded(band, lower=True, check_finite=False)
            except np.linalg.LinAlgError:
                continue
            return functools.partial(self._solve_factored, factor)
        raise _InvalidState("the tangent is not positive definite")

    def _solve_factored(self, factor: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        x = np.zeros(self.n_dofs)
        x[self._band_dofs] = cho_solve_banded((factor, True), rhs[self._band_dofs], check_finite=False)
        return x

    # ---- solution --------------------------------------------------------------------------------

    def solve_linear(self, pressure: float) -> np.ndarray:
        """Small-strain displacement: the tangent at u = 0 without load stiffness, one solve."""
        u = np.zeros(self.n_dofs)
        try:
            solve = self._factor(self._evaluate(u, 0.0, tangent=True)[1])
        except _InvalidState as error:
            raise LabelError(f"singular stiffness matrix: {error}") from error
        return solve(self.pressure_load(u, pressure))

    def solve_nonlinear(
        self,
        pressure: float,
        rtol: float = 1e-8,
        max_iter: int = 20,
        initial_steps: int = 1,
        max_cuts: int = 6,
    ) -> np.ndarray:
        """Equilibrium displacement under the follower ``pressure``; raises LabelError if it fails.

        Converged when the residual norm (on the free dofs) is below ``rtol`` times that of the load.
        """
        scale = np.linalg.norm(self._unpinned(self.pressure_load(np.zeros(self.n_dofs), pressure)))
        u = np.zeros(self.n_dofs)
        load, step, cuts = 0.0, 1.0 / initial_steps, 0
        while load < 1.0:
            target = min(1.0, load + step)
            result = self._newton(u, target * pressure, rtol * target * scale, max_iter)
            if result is None:
                cuts += 1
                if cuts > max_cuts:
                    raise LabelError(
                        f"did not converge: Newton failed at {target * pressure:.4g} of "
                        f"{pressure:.4g} kPa after {max_cuts} load-step cuts"
                    )
                step /= 2
                continue
            u, iterations = result
            load = target
            if iterations <= max_iter // 3:
                step *= 2
        return u

    def _unpinned(self, residual: np.ndarray) -> np.ndarray:
        """The residual without the reactions at the pinned dofs (which are not unknowns)."""
        residual[self.fixed] = 0.0
        return residual

    def _newton(
        self, u: np.ndarray, pressure: float, atol: float, max_iter: int
    ) -> tuple[np.ndarray, int] | None:
        """Newton iterations with a line search from ``u``; ``(u, iterations)``, or None on failure."""
        try:
            residual = self._unpinned(self._evaluate(u, pressure, tangent=False)[0])
            for iteration in range(max_iter):
                if np.linalg.norm(residual) <= atol:
                    return u, iteration
                step = -self._factor(self._evaluate(u, pressure, tangent=True)[1])(residual)
                u, residual = self._line_search(u, step, residual, pressure)
        except _InvalidState:
            return None
        return (u, max_iter) if np.linalg.norm(residual) <= atol else None

    def _line_search(
        self, u: np.ndarray, step: np.ndarray, residual: np.ndarray, pressure: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Shorten a Newton step that overshoots (the stiffening material makes it do so) until the
        slope of the potential along it, ``g(a) = step . R(u + a step)``, is at most half its
        initial magnitude: safeguarded regula falsi on ``g``, bisection where ``J <= 0``.
        Returns the new ``u`` and its residual."""
        slope_0 = step @ residual
        low, slope_low, high, slope_high = 0.0, slope_0, 1.0, None
        alpha, best = 1.0, None
        for _ in range(LINE_SEARCH_STEPS):
            trial = u + alpha * step
            try:
                trial_residual = self._unpinned(self._evaluate(trial, pressure, tangent=False)[0])
            except _InvalidState:
                high, slope_high = alpha, None
                alpha = 0.5 * (low + high)
                continue
            slope = step @ trial_residual
            # Keep a full step that does not overshoot, and any step along a non-descent direction.
            if abs(slope) <= 0.5 * abs(slope_0) or slope_0 >= 0 or (slope < 0 and alpha == 1.0):
                return trial, trial_residual
            if best is None or abs(slope) < best[0]:
                best = (abs(slope), trial, trial_residual)
            if slope < 0:
                low, slope_low = alpha, slope
            else:
                high, slope_high = alpha, slope
            width = high - low
            if slope_high is None:
                alpha = low + 0.5 * width
            else:
                alpha = low - slope_low * width / (slope_high - slope_low)
            alpha = min(max(alpha, low + 0.1 * width), high - 0.1 * width)
        if best is None:
            raise _InvalidState("no admissible step along the Newton direction")
        return best[1], best[2]

    def von_mises(self, u: np.ndarray, linear: bool = False) -> np.ndarray:
        """Element-centre von Mises stress ``[n_elements]`` (kPa), finite-strain or small-strain."""
        grad_u = (self.b_centre @ u[self.element_dofs][:, :, None])[..., 0]
        if linear:
            return self.material.linear_von_mises(grad_u)
        return self.material.von_mises(_IDENTITY + grad_u)


# --------------------------------------------------------------------------------------------------
# Labeler
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FEMParams:
    """Everything that changes a label (units: kPa, mm, pixels); see the module docstring."""

    material: str = "mooney-rivlin"
    pressure_kpa: float = 16.0
    pixel_mm: float = 0.1
    c1_kpa: float = 0.138
    d1_kpa: float = 3.833
    d2: float = 18.803
    bulk_ratio: float = 1000.0
    smoothing_sigma_px: float = 1.0
    newton_rtol: float = 1e-8
    max_newton_iter: int = 20
    initial_load_steps: int = 1
    max_step_cuts: int = 6

    def material_model(self) -> MooneyRivlin:
        return MooneyRivlin(self.c1_kpa, self.d1_kpa, self.d2, self.bulk_ratio)


#: The keyword options FEMLabeler accepts besides material, pressure and pixel size.
SOLVER_OPTIONS = tuple(
    f.name for f in fields(FEMParams) if f.name not in ("material", "pressure_kpa", "pixel_mm")
)


@dataclass
class BatchLabels:
    """The result of :meth:`FEMLabeler.label_batch` for N masks of shape H x W."""

    stress: np.ndarray  #: float32 [N, H, W], kPa; zeros where failed
    ok: np.ndarray  #: bool [N]
    errors: dict[int, str]  #: index -> LabelError message for failed masks
    masks: np.ndarray  #: bool [N, H, W]: the cleaned masks solved; the raw mask where cleaning failed


def _solve_wall(wall: np.ndarray, lumen: np.ndarray, params: FEMParams) -> np.ndarray:
    """Solve one cleaned wall: the float32 ``[H, W]`` von Mises stress map (kPa)."""
    mesh = build_mesh(wall, lumen, params.pixel_mm, params.smoothing_sigma_px)
    model = WallModel(mesh, params.material_model())
    linear = params.material == "linear"
    if linear:
        u = model.solve_linear(params.pressure_kpa)
    else:
        u = model.solve_nonlinear(
            params.pressure_kpa,
            rtol=params.newton_rtol,
            max_iter=params.max_newton_iter,
            initial_steps=params.initial_load_steps,
            max_cuts=params.max_step_cuts,
        )
    stress = np.zeros(wall.shape, dtype=np.float32)
    stress[mesh.pixels[:, 0], mesh.pixels[:, 1]] = model.von_mises(u, linear=linear)
    return stress


def _label_one(mask: np.ndarray, params: FEMParams) -> tuple[np.ndarray, np.ndarray | LabelError]:
    """``(the mask solved, its stress map or the LabelError)`` for one raw mask."""
    try:
        wall, lumen = segment_mask(mask)
    except LabelError as error:
        return np.asarray(mask) != 0, error
    try:
        with _one_blas_thread():
            return wall, _solve_wall(wall, lumen, params)
    except LabelError as error:
        return wall, error


def _label_task(mask: np.ndarray, params: FEMParams) -> tuple[np.ndarray, np.ndarray | str]:
    """Worker entry point; an error travels back as its message (small and always picklable)."""
    wall, result = _label_one(mask, params)
    return wall, str(result) if isinstance(result, LabelError) else result


def _cleaned_or_raw(mask: np.ndarray) -> np.ndarray:
    try:
        return clean_mask(mask)
    except LabelError:
        return np.asarray(mask) != 0


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _init_worker() -> None:
    """Pool initializer: one BLAS/OpenMP thread per worker, the pool supplies the parallelism."""
    os.environ.update({name: "1" for name in _THREAD_VARIABLES})
    if threadpoolctl is not None:
        threadpoolctl.threadpool_limits(1)


@functools.cache
def _thread_controller() -> threadpoolctl.ThreadpoolController:
    return threadpoolctl.ThreadpoolController()


def _one_blas_thread() -> contextlib.AbstractContextManager:
    """Run BLAS single-threaded: its threads only slow down the small banded factorizations."""
    if threadpoolctl is None:
        return contextlib.nullcontext()
    return _thread_controller().limit(limits=1, user_api="blas")


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class FEMLabeler:
    """Labels vessel-wall masks with their von Mises stress map (kPa) under lumen pressure."""

    def __init__(
        self,
        material: str = "mooney-rivlin",
        pressure_kpa: float = 16.0,
        pixel_mm: float = 0.1,
        cache: LabelCache | str | os.PathLike | None = None,
        **solver_options: float,
    ) -> None:
        """``material``: "mooney-rivlin" or "linear"; ``cache``: a LabelCache or the path of its
        SQLite file; ``solver_options``: any of :data:`SOLVER_OPTIONS` (see :class:`FEMParams`)."""
        if material not in MATERIALS:
            raise ValueError(f"material must be one of {MATERIALS}, got {material!r}")
        if not (pressure_kpa > 0 and pixel_mm > 0):
            raise ValueError(f"pressure_kpa and pixel_mm must be positive, got {pressure_kpa}, {pixel_mm}")
        unknown = sorted(set(solver_options) - set(SOLVER_OPTIONS))
        if unknown:
            raise TypeError(f"unknown solver options {unknown}; known: {', '.join(SOLVER_OPTIONS)}")
        self.params = FEMParams(material, float(pressure_kpa), float(pixel_mm), **solver_options)
        self.cache = cache if cache is None or isinstance(cache, LabelCache) else LabelCache(cache)

    def __repr__(self) -> str:
        return f"FEMLabeler({self.params}, cache={self.cache!r})"

    def settings(self) -> dict:
        """Everything that changes the result, JSON-serialisable (part of the cache key)."""
        return {**asdict(self.params), "fem_version": FEM_VERSION}

    def label(self, mask: np.ndarray) -> np.ndarray:
        """One mask ``[H, W]`` -> float32 von Mises stress map ``[H, W]`` (kPa); raises LabelError."""
        key = None if self.cache is None else self.cache.key(mask, self.settings())
        result = None if key is None else self.cache.get(key)
        if result is None:
            result = _label_one(mask, self.params)[1]
            if key is not None:
                self.cache.put(key, result)
        if isinstance(result, LabelError):
            raise result
        return result

    def label_batch(
        self, masks: np.ndarray, workers: int | None = None, progress: bool = True
    ) -> BatchLabels:
        """Label masks ``[N, H, W]``, cached ones from the cache and the rest in parallel worker
        processes (``workers=None``: all cores; ``workers=1``: in this process). New results are
        cached as they arrive, identical masks are solved once, and a mask that cannot be labeled
        is reported in ``errors`` instead of raising. The progress bar shows only when a mask
        needs solving."""
        masks = np.asarray(masks)
        if masks.ndim != 3:
            raise ValueError(f"masks must be [N, H, W], got shape {masks.shape}")
        n = len(masks)
        settings = self.settings()
        keys = [LabelCache.key(mask, settings) for mask in masks]
        results: dict[str, np.ndarray | LabelError] = {} if self.cache is None else self.cache.get_many(keys)
        copies = Counter(keys)
        first_index: dict[str, int] = {}
        for index, key in enumerate(keys):
            if key not in results:
                first_index.setdefault(key, index)
        solved: dict[str, np.ndarray] = {}

        with tqdm(total=n, disable=not (progress and first_index), desc="FEM labels", unit="mask") as bar:
            bar.update(n - sum(copies[key] for key in first_index))
            unsaved = []
            for key, wall, result in self._solve(masks, list(first_index.items()), workers):
                results[key], solved[key] = result, wall
                unsaved.append((key, result))
                bar.update(copies[key])
                if self.cache is not None and len(unsaved) >= _CACHE_FLUSH:
                    self.cache.put_many(unsaved)
                    unsaved = []
            if self.cache is not None:
                self.cache.put_many(unsaved)

        stress = np.zeros(masks.shape, dtype=np.float32)
        ok = np.zeros(n, dtype=bool)
        errors: dict[int, str] = {}
        cleaned = np.zeros(masks.shape, dtype=bool)
        for index, key in enumerate(keys):
            result = results[key]
            if isinstance(result, LabelError):
                errors[index] = str(result)
            else:
                stress[index], ok[index] = result, True
            cleaned[index] = solved[key] if key in solved else _cleaned_or_raw(masks[index])
        return BatchLabels(stress, ok, errors, cleaned)

    def _solve(
        self, masks: np.ndarray, todo: list[tuple[str, int]], workers: int | None
    ) -> Iterator[tuple[str, np.ndarray, np.ndarray | LabelError]]:
        """Yield ``(key, solved mask, stress map or LabelError)`` for each ``(key, mask index)``."""
        workers = min(workers or _available_cores(), len(todo) // MASKS_PER_WORKER_MIN)
        if workers <= 1:
            for key, index in todo:
                yield key, *_label_one(masks[index], self.params)
            return
        pending = iter(todo)
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            in_flight = {}
            try:
                # A few tasks per worker in flight: enough to keep them busy, without pickling
                # every mask up front.
                for key, index in itertools.islice(pending, 2 * workers):
                    in_flight[pool.submit(_label_task, masks[index] != 0, self.params)] = key
                while in_flight:
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        key = in_flight.pop(future)
                        wall, result = future.result()
                        yield key, wall, LabelError(result) if isinstance(result, str) else result
                        for next_key, index in itertools.islice(pending, 1):
                            in_flight[pool.submit(_label_task, masks[index] != 0, self.params)] = next_key
            finally:
                for future in in_flight:
                    future.cancel()


# --------------------------------------------------------------------------------------------------
# scikit-fem reference assembly (slow; used to verify WallModel)
# --------------------------------------------------------------------------------------------------


def _skfem_bases(mesh: WallMesh):
    from skfem import Basis, ElementQuad0, ElementQuad1, ElementVector, MeshQuad

    skmesh = MeshQuad(mesh.nodes.T.copy(), mesh.elements.T.copy())
    basis = Basis(skmesh, ElementVector(ElementQuad1()), intorder=3)
    return skmesh, basis, basis.with_element(ElementQuad0())


def reference_linear_stiffness(mesh: WallMesh, material: MooneyRivlin) -> sp.csr_matrix:
    """Small-strain Q1/P0 stiffness assembled with scikit-fem forms (the reference for the tangent at u = 0).

    ``int 2 mu dev(eps(u)) : eps(v)`` plus the statically condensed element-pressure block
    ``kappa B^T M^-1 B`` of the mixed form ``int q div u`` with P0 pressures.
    """
    from skfem import BilinearForm
    from skfem.helpers import ddot, div, sym_grad, trace

    _, basis, pressure_basis = _skfem_bases(mesh)
    mu, kappa = material.shear_modulus, material.bulk_modulus

    @BilinearForm
    def deviatoric(u, v, w):
        eu, ev = sym_grad(u), sym_grad(v)
        return 2.0 * mu * (ddot(eu, ev) - trace(eu) * trace(ev) / 3.0)

    @BilinearForm
    def divergence(u, q, w):
        return div(u) * q

    @BilinearForm
    def mass(p, q, w):
        return p * q

    coupling = divergence.assemble(basis, pressure_basis)
    inverse_mass = sp.diags(1.0 / mass.assemble(pressure_basis).diagonal())
    return (deviatoric.assemble(basis) + kappa * coupling.T @ inverse_mass @ coupling).tocsr()


def reference_residual(mesh: WallMesh, material: MooneyRivlin, u: np.ndarray, pressure: float) -> np.ndarray:
    """The finite-strain residual at ``u`` assembled with scikit-fem forms (reference for WallModel).

    ``int (P_iso + p_e cof F) : grad v dV + pressure int (cof F) N . v dA`` over the lumen border, with
    ``p_e = kappa (Jbar_e - 1)`` from the element-mean dilatation, all by quadrature.
    """
    from skfem import FacetBasis, Functional, LinearForm
    from skfem.helpers import ddot, det, dot, grad, inv, mul, transpose

    skmesh, basis, pressure_basis = _skfem_bases(mesh)
    eye = np.eye(2)[:, :, None, None]

    def deformation(w):
        return grad(w["u"]) + eye

    jacobian = Functional(lambda w: det(deformation(w))).elemental(basis, u=basis.interpolate(u))
    areas = Functional(lambda w: 1.0 + 0.0 * w.x[0]).elemental(basis)
    element_pressure = material.bulk_modulus * (jacobian / areas - 1.0)

    @LinearForm
    def internal(v, w):
        f = deformation(w)
        j = det(f)
        f_inv_t = transpose(inv(f))
        i1 = ddot(f, f) + 1.0
        dpsi = material.c1 + material.d1 * material.d2 * np.exp(material.d2 * (j ** (-2 / 3) * i1 - 3.0))
        piola = dpsi * j ** (-2 / 3) * (2.0 * f - 2.0 / 3.0 * i1 * f_inv_t) + w["p"] * j * f_inv_t
        return ddot(piola, grad(v))

    lumen_facets = _facet_indices(skmesh, mesh.lumen_edges)
    facet_basis = FacetBasis(skmesh, basis.elem, facets=lumen_facets, intorder=2)

    @LinearForm
    def follower(v, w):
        f = deformation(w)
        return pressure * dot(mul(det(f) * transpose(inv(f)), w.n), v)

    internal_forces = internal.assemble(
        basis, u=basis.interpolate(u), p=pressure_basis.interpolate(element_pressure)
    )
    return internal_forces + follower.assemble(facet_basis, u=facet_basis.interpolate(u))


def _facet_indices(skmesh, edges: np.ndarray) -> np.ndarray:
    index = {tuple(pair): i for i, pair in enumerate(np.sort(skmesh.facets, axis=0).T)}
    return np.array([index[tuple(pair)] for pair in np.sort(edges, axis=1)])
