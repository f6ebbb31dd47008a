"""The plane-strain Q1/P0 wall model, vectorised over elements, and its Newton solver.

:class:`WallModel` evaluates the residual and tangent of the total potential (see the module
docstring of :mod:`labelers.fem`) with numpy and solves with banded Cholesky; the load stepping,
Newton iterations and line search live in :class:`NewtonSolver`, which the scikit-fem reference
model (:mod:`labelers.fem_reference`) shares.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from scipy import ndimage
from scipy.linalg import cho_solve_banded, cholesky_banded
from scipy.sparse.csgraph import reverse_cuthill_mckee

from labelers.base import LabelError
from labelers.material import _IDENTITY, MooneyRivlin, _outer
from labelers.mesh import _EDGE_AREA_HESSIAN, _QUAD_AREA_HESSIAN, WallMesh

__all__ = ["NewtonSolver", "WallModel"]

#: Relative increases of the tangent's diagonal tried until it is positive definite.
TANGENT_SHIFTS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: Residual evaluations allowed per Newton line search.
LINE_SEARCH_STEPS = 8

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


class InvalidState(Exception):
    """A displacement that inverts an element (J <= 0) or makes the stress non-finite."""


def rigid_body_pins(mesh: WallMesh) -> np.ndarray:
    """The three pinned dofs of a wall mesh, sorted: both at the left-most node of the thick part of
    the wall, and one at the node of that part farthest from it. (On a thin appendage, such as a
    one-pixel spur, the pins would leave the rotation held only by the spur's bending stiffness.)"""
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


class NewtonSolver:
    """Load stepping, Newton iterations and line search on a model's potential ``Pi(u)``.

    A subclass sets ``n_dofs`` and ``fixed`` (the pinned dofs) and defines ``pressure_load``,
    ``_evaluate(u, pressure, tangent) -> (residual, tangent or None)`` and ``_factor(tangent) ->
    solve``, where ``solve(rhs)`` is 0 on the pinned dofs; the last two raise InvalidState where
    the state is inadmissible or the tangent cannot be made positive definite.
    """

    n_dofs: int
    fixed: np.ndarray

    def pressure_load(self, u: np.ndarray, pressure: float) -> np.ndarray:
        """Nodal forces ``p dA_lumen/du`` ``[n_dofs]`` of the lumen pressure at ``u`` (kPa*mm)."""
        raise NotImplementedError

    def _evaluate(self, u: np.ndarray, pressure: float, tangent: bool) -> tuple[np.ndarray, object]:
        """dPi/du ``[n_dofs]`` and, if asked, the tangent d2Pi/du2 in the form ``_factor`` takes."""
        raise NotImplementedError

    def _factor(self, tangent: object) -> Callable[[np.ndarray], np.ndarray]:
        """A solver ``rhs [n_dofs] -> x [n_dofs]`` for the tangent on the free dofs."""
        raise NotImplementedError

    def solve_linear(self, pressure: float) -> np.ndarray:
        """Small-strain displacement: the tangent at u = 0 without load stiffness, one solve."""
        u = np.zeros(self.n_dofs)
        try:
            solve = self._factor(self._evaluate(u, 0.0, tangent=True)[1])
        except InvalidState as error:
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

    def _newton(self, u: np.ndarray, pressure: float, atol: float, max_iter: int) -> tuple[np.ndarray, int] | None:
        """Newton iterations with a line search from ``u``; ``(u, iterations)``, or None on failure."""
        try:
            residual = self._unpinned(self._evaluate(u, pressure, tangent=False)[0])
            for iteration in range(max_iter):
                if np.linalg.norm(residual) <= atol:
                    return u, iteration
                step = -self._factor(self._evaluate(u, pressure, tangent=True)[1])(residual)
                u, residual = self._line_search(u, step, residual, pressure)
        except InvalidState:
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
            except InvalidState:
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
            raise InvalidState("no admissible step along the Newton direction")
        return best[1], best[2]


class WallModel(NewtonSolver):
    """Residual, tangent and stresses of the plane-strain Q1/P0 wall model, vectorised over elements.

    Displacements ``u`` are float64 ``[2 * n_nodes]`` in mm, interleaved ``(u_x, u_y)`` per node.
    The residual is the gradient of the total potential ``Pi(u)`` (see :mod:`labelers.fem`) and the
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

        self.fixed = rigid_body_pins(mesh)
        self._build_pattern()

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

        graph = sp.csr_matrix((np.ones(len(pairs)), self._block_cols, self._block_indptr), shape=(n_nodes, n_nodes))
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

    def _evaluate(self, u: np.ndarray, pressure: float, tangent: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Residual ``[n_dofs]`` and, if asked, the tangent's 2x2 blocks ``[n_blocks, 4]``;
        raises InvalidState where an element is inverted or a value is not finite."""
        material = self.material
        u_elements = u[self.element_dofs]
        f = _IDENTITY + (self.b_gauss @ u_elements[:, :, None]).reshape(len(u_elements), -1, 4)
        j = f[..., 0] * f[..., 3] - f[..., 1] * f[..., 2]
        # The area is quadratic in u: v_e - V_e = (dV_e/dX) . u + u . H . u / 2, exactly.
        area_change = u_elements @ _QUAD_AREA_HESSIAN
        volumetric_strain = ((self.area_gradients + 0.5 * area_change) * u_elements).sum(1) / self.areas
        area_gradient = self.area_gradients + area_change  # dv_e/dx
        if j.min() <= 0 or volumetric_strain.min() <= -1:
            raise InvalidState("an element is inverted (J <= 0)")
        kappa = material.bulk_modulus
        volumetric_pressure = kappa * volumetric_strain  # kappa (Jbar - 1)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught just below
            stress, moduli = material.isochoric(f, tangent)
            forces = (self.weighted_bt @ stress.reshape(len(f), -1, 1))[..., 0]
        forces += volumetric_pressure[:, None] * area_gradient
        residual = np.bincount(self.element_dofs.ravel(), forces.ravel(), self.n_dofs)
        residual -= self.pressure_load(u, pressure)
        if not np.isfinite(residual).all():
            raise InvalidState("non-finite stresses")
        if not tangent:
            return residual, None

        n_elements, n_points = f.shape[:2]
        b = self.b_gauss.reshape(n_elements, n_points, 4, 8)
        stiffness = self.weighted_bt @ (moduli @ b).reshape(n_elements, -1, 8)
        stiffness += (kappa / self.areas)[:, None, None] * _outer(area_gradient, area_gradient)
        stiffness += volumetric_pressure[:, None, None] * _QUAD_AREA_HESSIAN
        edge_stiffness = np.broadcast_to(-pressure * _EDGE_AREA_HESSIAN, (len(self.edge_dofs), 4, 4))
        # Element matrices as node-pair blocks, in the order of self._to_block.
        values = np.concatenate(
            [
                stiffness.reshape(n_elements, 4, 2, 4, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 4),
                edge_stiffness.reshape(-1, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(-1, 4),
            ]
        )
        blocks = np.stack([np.bincount(self._to_block, values[:, k], self._n_blocks) for k in range(4)], 1)
        if not np.isfinite(blocks).all():
            raise InvalidState("non-finite tangent")
        return residual, blocks

    def _factor(self, blocks: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """A solver ``rhs [n_dofs] -> x [n_dofs]`` for the tangent with ``blocks`` on the free dofs
        (``x`` is 0 on the pinned ones).

        Banded Cholesky in reverse Cuthill-McKee order: the tangent is symmetric, and positive
        definite at a stable equilibrium. Far from equilibrium it can be indefinite (the volumetric
        term ``kappa (Jbar - 1) d2v/dx2`` and the pressure load stiffness are); then its diagonal is
        increased by a growing fraction until it is positive definite, which keeps the Newton step a
        descent direction of the potential. Raises InvalidState if that fails.
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
        raise InvalidState("the tangent is not positive definite")

    def _solve_factored(self, factor: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        x = np.zeros(self.n_dofs)
        x[self._band_dofs] = cho_solve_banded((factor, True), rhs[self._band_dofs], check_finite=False)
        return x

    def von_mises(self, u: np.ndarray, linear: bool = False) -> np.ndarray:
        """Element-centre von Mises stress ``[n_elements]`` (kPa), finite-strain or small-strain."""
        grad_u = (self.b_centre @ u[self.element_dofs][:, :, None])[..., 0]
        if linear:
            return self.material.linear_von_mises(grad_u)
        return self.material.von_mises(_IDENTITY + grad_u)
