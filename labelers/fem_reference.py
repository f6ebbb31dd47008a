"""The scikit-fem reference of the FEM labeler: the Q1/P0 wall model assembled from weak forms.

:class:`ReferenceModel` is the ``backend="skfem"`` of :class:`~labelers.fem.FEMLabeler`: the same
formulation as :class:`~labelers.model.WallModel` (see :mod:`labelers.fem`), written as scikit-fem
forms integrated by quadrature instead of vectorised element matrices, the mean dilatation as the
statically condensed P0 pressure of the mixed form, the stresses from the first Piola stress, and
the Newton steps solved with SuperLU instead of banded Cholesky. It shares the mesh, the material
parameters, the pins and the Newton scheme (:class:`~labelers.model.NewtonSolver`), so its labels
equal the fast backend's up to round-off (measured in :mod:`labelers.fem`); it is 3-7x slower.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import SuperLU, splu
from skfem import (
    Basis,
    BilinearForm,
    ElementQuad0,
    ElementQuad1,
    ElementVector,
    FacetBasis,
    Functional,
    LinearForm,
    MeshQuad,
)
from skfem.helpers import ddot, det, div, dot, grad, inv, mul, sym_grad, trace, transpose

from labelers.base import LabelError
from labelers.material import MooneyRivlin
from labelers.mesh import WallMesh
from labelers.model import TANGENT_SHIFTS, InvalidState, NewtonSolver, rigid_body_pins

__all__ = ["ReferenceModel"]

_EYE = np.eye(2)[:, :, None, None]


def _cof(h: np.ndarray) -> np.ndarray:
    """The cofactor ``det(H) H^-T`` of 2x2 fields ``[2, 2, ...]``; linear in H in 2-D."""
    return np.array([[h[1, 1], -h[1, 0]], [-h[0, 1], h[0, 0]]])


def _von_mises_3d(s: np.ndarray, s33: np.ndarray) -> np.ndarray:
    """Von Mises stress of a plane-strain stress: in-plane ``[2, 2, ...]`` and out-of-plane parts."""
    mean = (trace(s) + s33) / 3.0
    deviator = s - mean * _EYE
    return np.sqrt(1.5 * (ddot(deviator, deviator) + (s33 - mean) ** 2))


@LinearForm
def _internal_forces(v, w):
    """``P : grad v``, P the first Piola stress (isochoric plus element pressure)."""
    return ddot(w["piola"], grad(v))


@LinearForm
def _follower_load(v, w):
    """``pressure (cof F) N . v`` on the lumen border: the pressure on the deformed border."""
    return w["pressure"] * dot(mul(_cof(grad(w["u"]) + _EYE), w.n), v)


@BilinearForm
def _follower_stiffness(du, v, w):
    """The derivative of :func:`_follower_load` along ``du``: the load stiffness ``-p d2A_lumen/dx2``."""
    return w["pressure"] * dot(mul(_cof(grad(du)), w.n), v)


@BilinearForm
def _isochoric_stiffness(du, v, w):
    """``dP_iso[grad du] : grad v + p_e d(cof F)[grad du] : grad v`` (the second from mean dilatation)."""
    h = grad(du)
    f, f_inv_t, g = w["f"], w["f_inv_t"], w["g"]
    j23, i1 = w["j23"], w["i1"]
    dg = -2.0 / 3.0 * ddot(f_inv_t, h) * g + j23 * (
        2.0 * h - 4.0 / 3.0 * ddot(f, h) * f_inv_t + 2.0 / 3.0 * i1 * mul(mul(f_inv_t, transpose(h)), f_inv_t)
    )
    d_piola = w["curvature"] * ddot(g, h) * g + w["dpsi"] * dg
    return ddot(d_piola + w["p"] * _cof(h), grad(v))


@BilinearForm
def _dilatation_coupling(du, q, w):
    """``q d(v_e)[du]``: the change of deformed element area, tested with P0 pressures ``q``."""
    return q * ddot(w["cof_f"], grad(du))


class ReferenceModel(NewtonSolver):
    """The Q1/P0 wall model of :class:`~labelers.model.WallModel` assembled with scikit-fem.

    Same interface (``solve_linear``, ``solve_nonlinear``, ``residual``, ``tangent``,
    ``pressure_load``, ``von_mises``), the same displacement layout (interleaved ``(u_x, u_y)`` per
    node, mm) and the same pinned dofs; ``pressure`` is the lumen pressure in kPa.
    """

    def __init__(self, mesh: WallMesh, material: MooneyRivlin) -> None:
        self.mesh = mesh
        self.material = material
        self.n_dofs = 2 * len(mesh.nodes)
        self.fixed = rigid_body_pins(mesh)
        self._free = np.setdiff1d(np.arange(self.n_dofs), self.fixed)
        skmesh = MeshQuad(mesh.nodes.T.copy(), mesh.elements.T.copy())
        element = ElementVector(ElementQuad1())
        self.basis = Basis(skmesh, element, intorder=3)  # 2x2 Gauss points, as WallModel
        self.pressure_basis = self.basis.with_element(ElementQuad0())
        self.centre_basis = Basis(skmesh, element, quadrature=(np.full((2, 1), 0.5), np.ones(1)))
        lumen = _facet_indices(skmesh, mesh.lumen_edges)
        self.facet_basis = FacetBasis(skmesh, element, facets=lumen, intorder=2)
        self.areas = Functional(lambda w: 1.0 + 0.0 * w.x[0]).elemental(self.basis)  # V_e

    def residual(self, u: np.ndarray, pressure: float) -> np.ndarray:
        """dPi/du ``[n_dofs]``: internal forces minus the follower pressure load (kPa*mm)."""
        return self._evaluate(u, pressure, tangent=False)[0]

    def tangent(self, u: np.ndarray, pressure: float) -> sp.csr_matrix:
        """d2Pi/du2 ``[n_dofs, n_dofs]``, including the load stiffness of the follower pressure."""
        return self._evaluate(u, pressure, tangent=True)[1]

    def pressure_load(self, u: np.ndarray, pressure: float) -> np.ndarray:
        """Nodal forces ``[n_dofs]`` of the lumen pressure at ``u`` (kPa*mm), by quadrature."""
        u_border = self.facet_basis.interpolate(u)
        return -_follower_load.assemble(self.facet_basis, u=u_border, pressure=pressure)

    def linear_stiffness(self) -> sp.csr_matrix:
        """Small-strain Q1/P0 stiffness: ``int 2 mu dev(eps(u)) : eps(v)`` plus the statically
        condensed element-pressure block ``kappa B^T M^-1 B`` of the mixed form ``int q div u``."""
        mu, kappa = self.material.shear_modulus, self.material.bulk_modulus

        @BilinearForm
        def deviatoric(u, v, w):
            eu, ev = sym_grad(u), sym_grad(v)
            return 2.0 * mu * (ddot(eu, ev) - trace(eu) * trace(ev) / 3.0)

        @BilinearForm
        def divergence(u, q, w):
            return div(u) * q

        coupling = divergence.assemble(self.basis, self.pressure_basis)
        condensed = coupling.T @ sp.diags(1.0 / self.areas) @ coupling
        return (deviatoric.assemble(self.basis) + kappa * condensed).tocsr()

    def solve_linear(self, pressure: float) -> np.ndarray:
        """Small-strain displacement: the small-strain stiffness (not the finite-strain tangent at
        u = 0, which equals it) under the load at u = 0, one solve."""
        try:
            solve = self._factor(self.linear_stiffness())
        except InvalidState as error:
            raise LabelError(f"singular stiffness matrix: {error}") from error
        return solve(self.pressure_load(np.zeros(self.n_dofs), pressure))

    def _fields(self, u: np.ndarray) -> dict[str, np.ndarray]:
        """Kinematics, element pressures and stresses at the Gauss points ``[..., n_elements, 4]``;
        raises InvalidState where an element is inverted."""
        material = self.material
        f = grad(self.basis.interpolate(u)) + _EYE
        j = det(f)
        jbar = Functional(lambda w: w["j"]).elemental(self.basis, j=j) / self.areas
        if j.min() <= 0 or jbar.min() <= 0:
            raise InvalidState("an element is inverted (J <= 0)")
        f_inv_t = transpose(inv(f))
        i1 = ddot(f, f) + 1.0
        j23 = j ** (-2.0 / 3.0)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught by the callers
            growth = material.d1 * material.d2 * np.exp(material.d2 * (j23 * i1 - 3.0))
        g = j23 * (2.0 * f - 2.0 / 3.0 * i1 * f_inv_t)  # d(I1b)/dF
        dpsi = material.c1 + growth
        element_pressure = material.bulk_modulus * (jbar - 1.0)
        p = np.asarray(self.pressure_basis.interpolate(element_pressure))
        return dict(
            f=f,
            f_inv_t=f_inv_t,
            cof_f=j * f_inv_t,
            g=g,
            j23=j23,
            i1=i1,
            dpsi=dpsi,
            curvature=material.d2 * growth,
            p=p,
            piola=dpsi * g + p * j * f_inv_t,
        )

    def _evaluate(self, u: np.ndarray, pressure: float, tangent: bool) -> tuple[np.ndarray, sp.csr_matrix | None]:
        """Residual ``[n_dofs]`` and, if asked, the tangent (CSR); raises InvalidState where an
        element is inverted or a value is not finite."""
        fields = self._fields(u)
        residual = _internal_forces.assemble(self.basis, piola=fields["piola"])
        residual -= self.pressure_load(u, pressure)
        if not np.isfinite(residual).all():
            raise InvalidState("non-finite stresses")
        if not tangent:
            return residual, None
        coupling = _dilatation_coupling.assemble(self.basis, self.pressure_basis, cof_f=fields["cof_f"])
        matrix = (
            _isochoric_stiffness.assemble(self.basis, **fields)
            + self.material.bulk_modulus * coupling.T @ sp.diags(1.0 / self.areas) @ coupling
            + _follower_stiffness.assemble(self.facet_basis, pressure=pressure)
        ).tocsr()
        if not np.isfinite(matrix.data).all():
            raise InvalidState("non-finite tangent")
        return residual, matrix

    def _factor(self, matrix: sp.csr_matrix) -> Callable[[np.ndarray], np.ndarray]:
        """A solver ``rhs [n_dofs] -> x [n_dofs]`` (0 on the pinned dofs) of the tangent on the
        free dofs, its diagonal raised as in WallModel until it is positive definite: an LU
        factorization with a symmetric ordering and diagonal pivots, whose pivots then have the
        signs of the eigenvalues."""
        free = matrix[self._free][:, self._free].tocsc()
        diagonal = free.diagonal()
        for shift in TANGENT_SHIFTS:
            shifted = free + sp.diags(shift * diagonal)
            try:
                lu = splu(shifted, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
            except RuntimeError:  # exactly singular
                continue
            if np.array_equal(lu.perm_r, lu.perm_c) and (lu.U.diagonal() > 0).all():
                return functools.partial(self._solve_factored, lu)
        raise InvalidState("the tangent is not positive definite")

    def _solve_factored(self, lu: SuperLU, rhs: np.ndarray) -> np.ndarray:
        x = np.zeros(self.n_dofs)
        x[self._free] = lu.solve(rhs[self._free])
        return x

    def von_mises(self, u: np.ndarray, linear: bool = False) -> np.ndarray:
        """Element-centre von Mises stress ``[n_elements]`` (kPa), finite-strain or small-strain:
        the Cauchy stress ``P F^T / J`` of the isochoric first Piola stress ``P``, or ``2 mu eps``."""
        grad_u = grad(self.centre_basis.interpolate(u))
        if linear:
            eps = 0.5 * (grad_u + transpose(grad_u))
            stress = 2.0 * self.material.shear_modulus * eps
            return _von_mises_3d(stress, np.zeros_like(stress[0, 0]))[:, 0]
        material = self.material
        f = grad_u + _EYE
        j, i1 = det(f), ddot(f, f) + 1.0
        j23 = j ** (-2.0 / 3.0)
        dpsi = material.c1 + material.d1 * material.d2 * np.exp(material.d2 * (j23 * i1 - 3.0))
        piola = dpsi * j23 * (2.0 * f - 2.0 / 3.0 * i1 * transpose(inv(f)))
        piola_33 = dpsi * j23 * (2.0 - 2.0 / 3.0 * i1)  # F_33 = 1
        return _von_mises_3d(mul(piola, transpose(f)) / j, piola_33 / j)[:, 0]


def _facet_indices(skmesh: MeshQuad, edges: np.ndarray) -> np.ndarray:
    """scikit-fem's facet numbers of mesh edges ``[n, 2]`` (node pairs)."""
    index = {tuple(pair): i for i, pair in enumerate(np.sort(skmesh.facets, axis=0).T)}
    return np.array([index[tuple(pair)] for pair in np.sort(edges, axis=1)])
