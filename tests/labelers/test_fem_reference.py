"""The scikit-fem reference (labelers/fem_reference.py): its assembly against the vectorised
WallModel, and the ``backend="skfem"`` labels against the fast backend's."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from labelers import LabelError
from labelers.fem import FEMLabeler, FEMParams
from labelers.fem_reference import ReferenceModel
from labelers.masks import segment_mask
from labelers.mesh import build_mesh
from labelers.model import WallModel
from tasks.ivus_cohort import make_cohort
from tests.labelers.test_fem import annulus, irregular_vessel, small_ring

COHORT = make_cohort(4, seed=0).masks


@pytest.fixture(scope="module")
def models() -> tuple[WallModel, ReferenceModel]:
    wall, lumen = segment_mask(small_ring())
    mesh = build_mesh(wall, lumen, pixel_mm=0.1)
    return WallModel(mesh, FEMParams().material_model()), ReferenceModel(mesh, FEMParams().material_model())


@pytest.fixture(scope="module")
def deformed(models) -> np.ndarray:
    """The equilibrium at 16 kPa plus a perturbation: a non-trivial, non-equilibrium state."""
    u = models[0].solve_nonlinear(16.0)
    return u + 0.1 * np.abs(u).max() * np.random.default_rng(0).standard_normal(u.shape)


def test_linear_stiffness_is_the_fast_tangent_at_rest(models):
    fast, reference = models
    tangent = fast.tangent(np.zeros(fast.n_dofs), 0.0)
    stiffness = reference.linear_stiffness()
    assert sp.linalg.norm(tangent - stiffness) <= 1e-10 * sp.linalg.norm(stiffness)


def test_residual_load_and_tangent_match_the_fast_model(models, deformed):
    fast, reference = models
    pressure = 16.0
    for name in ("residual", "pressure_load"):
        expected = getattr(fast, name)(deformed, pressure)
        got = getattr(reference, name)(deformed, pressure)
        assert np.linalg.norm(got - expected) <= 1e-10 * np.linalg.norm(expected), name
    expected = fast.tangent(deformed, pressure)
    got = reference.tangent(deformed, pressure)
    assert sp.linalg.norm(got - expected) <= 1e-10 * sp.linalg.norm(expected)
    assert np.array_equal(reference.fixed, fast.fixed)


@pytest.mark.parametrize("linear", [True, False], ids=["linear", "mooney-rivlin"])
def test_solutions_and_stresses_match_the_fast_model(linear):
    """Before the rounding to float32: measured 5e-11 (linear) and 3e-14 (Mooney-Rivlin)."""
    for mask in COHORT[:2]:
        wall, lumen = segment_mask(mask)
        mesh = build_mesh(wall, lumen)
        stresses = []
        for model_type in (WallModel, ReferenceModel):
            model = model_type(mesh, FEMParams().material_model())
            u = model.solve_linear(16.0) if linear else model.solve_nonlinear(16.0)
            stresses.append(model.von_mises(u, linear=linear))
        fast, reference = stresses
        assert np.abs(reference - fast).max() <= 1e-9 * fast.max()


@pytest.mark.parametrize("material", ["linear", "mooney-rivlin"])
def test_backends_label_alike(material):
    masks = np.concatenate([COHORT, irregular_vessel()[None]])
    fast = FEMLabeler(material).label_batch(masks, workers=1, progress=False)
    reference = FEMLabeler(material, backend="skfem").label_batch(masks, workers=1, progress=False)
    assert reference.ok.all() and fast.ok.all()
    assert np.array_equal(reference.masks, fast.masks)
    scale = np.abs(fast.stress).max(axis=(1, 2), keepdims=True)
    assert (np.abs(reference.stress - fast.stress) <= 1e-6 * scale).all()  # float32 steps at most


def test_backends_fail_alike():
    for backend in ("fast", "skfem"):
        labeler = FEMLabeler("mooney-rivlin", max_newton_iter=1, max_step_cuts=1, backend=backend)
        with pytest.raises(LabelError, match="did not converge"):
            labeler.label(annulus(10, 20)[0])


def test_backend_is_in_the_settings_unless_it_is_the_default():
    default = FEMLabeler().settings()
    assert "backend" not in default and FEMLabeler(backend="fast").settings() == default
    assert FEMLabeler(backend="skfem").settings() == {**default, "backend": "skfem"}
    with pytest.raises(ValueError, match="backend"):
        FEMLabeler(backend="abaqus")
