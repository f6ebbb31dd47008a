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
* Backends: ``backend="fast"`` (the default) is the vectorised model above
  (:class:`~labelers.model.WallModel`); ``backend="skfem"`` assembles the same formulation with
  scikit-fem forms and solves it with the same Newton scheme but a sparse LU factorization
  (:class:`~labelers.fem_reference.ReferenceModel`), to cross-check any label. On 30 masks of
  0.6-1.7k wall pixels the stresses of the two agreed to 3e-14 (Mooney-Rivlin) and 6e-11 (linear)
  of the largest one, so the float32 labels were identical (Mooney-Rivlin) or at most one float32
  step apart (linear); the reference took 0.4-0.6 s (Mooney-Rivlin) or 0.04-0.08 s (linear) per
  mask on one core, 3-7x the fast backend's time.

Masks that cannot be labeled raise :class:`~labelers.base.LabelError`; :func:`~labelers.masks.clean_mask`
lists what is cleaned and what is refused. The parts live in their own modules: mask cleaning in
:mod:`labelers.masks`, the mesh in :mod:`labelers.mesh`, the material in :mod:`labelers.material`,
the model and its Newton solver in :mod:`labelers.model`, the scikit-fem reference in
:mod:`labelers.fem_reference`; batching, the cache and the worker pool in :mod:`labelers.batch`.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass, fields

import numpy as np

from labelers.batch import MAX_PIXELS, BatchLabeler, BatchLabels
from labelers.cache import LabelCache
from labelers.masks import clean_mask, segment_mask
from labelers.material import MooneyRivlin
from labelers.mesh import build_mesh
from labelers.model import NewtonSolver, WallModel

__all__ = ["BACKENDS", "FEM_VERSION", "SOLVER_OPTIONS", "FEMBatchLabels", "FEMLabeler", "FEMParams"]

FEM_VERSION = "1.0"

MATERIALS = ("mooney-rivlin", "linear")
#: The solvers a label can come from: the vectorised model, or the scikit-fem reference.
BACKENDS = ("fast", "skfem")


#: The range of each numeric option of FEMParams: (integer?, lowest, lowest allowed?, highest,
#: highest allowed?). Every value must also be finite.
_RANGES: dict[str, tuple[bool, float, bool, float, bool]] = {
    "pressure_kpa": (False, 0.0, False, math.inf, False),
    "pixel_mm": (False, 0.0, False, math.inf, False),
    "c1_kpa": (False, 0.0, True, math.inf, False),
    "d1_kpa": (False, 0.0, True, math.inf, False),
    "d2": (False, 0.0, True, math.inf, False),
    "bulk_ratio": (False, 0.0, False, math.inf, False),
    "smoothing_sigma_px": (False, 0.0, True, math.inf, False),
    "newton_rtol": (False, 0.0, False, 1.0, False),
    "max_newton_iter": (True, 1, True, math.inf, False),
    "initial_load_steps": (True, 1, True, math.inf, False),
    "max_step_cuts": (True, 0, True, math.inf, False),
}


def _range_text(integer: bool, low: float, low_in: bool, high: float, high_in: bool) -> str:
    kind = "an integer" if integer else "a finite number"
    if high == math.inf:
        return f"{kind} {'>=' if low_in else '>'} {low}"
    return f"{kind} in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"


def _checked(name: str, value: object) -> int | float:
    """``value`` of the option ``name`` if it is in its range (a numpy scalar becomes a Python
    number; a Python int stays one, so settings, and cache keys, are as given); ValueError if not."""
    integer, low, low_in, high, high_in = _RANGES[name]
    allowed = _range_text(integer, low, low_in, high, high_in)
    wrong_type = isinstance(value, (bool, np.bool_)) or not isinstance(
        value, numbers.Integral if integer else numbers.Real
    )
    if wrong_type:
        raise ValueError(f"{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    if isinstance(value, np.generic):
        value = value.item()
    number = float(value)
    in_range = (
        math.isfinite(number)
        and (number >= low if low_in else number > low)
        and (number <= high if high_in else number < high)
    )
    if not in_range:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


@dataclass(frozen=True)
class FEMParams:
    """Everything that changes a label (units: kPa, mm, pixels); see the module docstring.

    Every option is checked when constructed (ValueError naming the option, the value and the
    allowed range): pressure, pixel size and bulk ratio positive; c1, D1, D2 and the smoothing
    sigma at least 0, with a positive shear modulus ``2 (c1 + D1 D2)``; ``newton_rtol`` in (0, 1);
    ``max_newton_iter`` and ``initial_load_steps`` integers >= 1, ``max_step_cuts`` an integer >= 0.
    """

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

    def __post_init__(self) -> None:
        if self.material not in MATERIALS:
            raise ValueError(f"material must be one of {MATERIALS}, got {self.material!r}")
        for name in _RANGES:
            object.__setattr__(self, name, _checked(name, getattr(self, name)))
        if not self.c1_kpa + self.d1_kpa * self.d2 > 0:
            raise ValueError(
                "the shear modulus 2 (c1_kpa + d1_kpa * d2) must be positive, got c1_kpa="
                f"{self.c1_kpa!r}, d1_kpa={self.d1_kpa!r}, d2={self.d2!r}"
            )

    def material_model(self) -> MooneyRivlin:
        return MooneyRivlin(self.c1_kpa, self.d1_kpa, self.d2, self.bulk_ratio)


#: The keyword options FEMLabeler accepts besides material, pressure and pixel size.
SOLVER_OPTIONS = tuple(f.name for f in fields(FEMParams) if f.name not in ("material", "pressure_kpa", "pixel_mm"))


class FEMBatchLabels(BatchLabels):
    """The result of :meth:`FEMLabeler.label_batch`: ``labels`` are the stress maps."""

    @property
    def stress(self) -> np.ndarray:
        """float32 ``[N, H, W]`` von Mises stress maps, kPa; zeros where failed."""
        return self.labels


def _model_type(backend: str) -> type[NewtonSolver]:
    if backend == "skfem":
        from labelers.fem_reference import ReferenceModel  # imports scikit-fem: only when asked

        return ReferenceModel
    return WallModel


def _label_one(wall: np.ndarray, params: FEMParams, backend: str) -> np.ndarray:
    """Solve one cleaned wall mask ``[H, W]``: the float32 ``[H, W]`` von Mises stress map (kPa).

    Cleaning a cleaned mask changes nothing, so segmenting it again only finds its lumen."""
    wall, lumen = segment_mask(wall)
    mesh = build_mesh(wall, lumen, params.pixel_mm, params.smoothing_sigma_px)
    model = _model_type(backend)(mesh, params.material_model())
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


class FEMLabeler(BatchLabeler):
    """Labels vessel-wall masks with their von Mises stress map (kPa) under lumen pressure."""

    description = "FEM labels"
    batch_type = FEMBatchLabels

    def __init__(
        self,
        material: str = "mooney-rivlin",
        pressure_kpa: float = 16.0,
        pixel_mm: float = 0.1,
        cache: LabelCache | str | os.PathLike | None = None,
        backend: str = "fast",
        max_pixels: int | None = MAX_PIXELS,
        **solver_options: float,
    ) -> None:
        """``material``: "mooney-rivlin" or "linear"; ``cache``: a LabelCache or the path of its
        SQLite file (an unusable file is moved aside, used read-only or left out, with a
        :class:`~labelers.cache.LabelCacheWarning`); ``backend``: one of :data:`BACKENDS` (see the
        module docstring); ``max_pixels``: masks of more pixels (height x width) are refused with
        a LabelError (None: no limit; the default, 256 x 256, is 16 times an IVUS mask; not part
        of the settings); ``solver_options``: any of :data:`SOLVER_OPTIONS` (see
        :class:`FEMParams`). Every option is checked here: ValueError naming the option, the value
        and the allowed range; TypeError for an unknown option."""
        if material not in MATERIALS:
            raise ValueError(f"material must be one of {MATERIALS}, got {material!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        unknown = sorted(set(solver_options) - set(SOLVER_OPTIONS))
        if unknown:
            raise TypeError(f"unknown solver options {unknown}; known: {', '.join(SOLVER_OPTIONS)}")
        pressure_kpa = float(_checked("pressure_kpa", pressure_kpa))
        pixel_mm = float(_checked("pixel_mm", pixel_mm))
        params = FEMParams(material, pressure_kpa, pixel_mm, **solver_options)
        super().__init__(cache, max_pixels)
        self.params = params
        self.backend = backend

    def __repr__(self) -> str:
        return f"FEMLabeler({self.params}, backend={self.backend!r}, cache={self.cache!r})"

    def settings(self) -> dict:
        """Everything that changes the result, JSON-serialisable (part of the cache key). The
        default backend adds no entry, so the keys of labels cached before backends existed hold."""
        settings = {**asdict(self.params), "fem_version": FEM_VERSION}
        if self.backend != "fast":
            settings["backend"] = self.backend
        return settings

    def prepare(self, mask: np.ndarray) -> np.ndarray:
        """The cleaned bool wall ``[H, W]`` (see :func:`~labelers.masks.clean_mask`); raises LabelError."""
        return clean_mask(mask)

    def solve(self, mask: np.ndarray) -> np.ndarray:
        """The float32 ``[H, W]`` von Mises stress map (kPa) of a cleaned wall; raises LabelError."""
        return _label_one(mask, self.params, self.backend)
