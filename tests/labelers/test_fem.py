"""Specification of the finite-element stress labeler (labelers/fem.py and the modules it uses)."""

from __future__ import annotations

import json
import multiprocessing
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from labelers import LabelError, fem
from labelers.fem import FEMLabeler
from labelers.masks import clean_mask, segment_mask
from labelers.material import MooneyRivlin
from labelers.mesh import build_mesh
from labelers.model import WallModel

REPO = Path(__file__).resolve().parents[2]


def annulus(a: float, b: float, size: int = 64, lumen_offset: tuple[float, float] = (0.0, 0.0)):
    """Wall pixels whose centres lie within ``b`` of the image centre and not within ``a`` of the
    (optionally offset) lumen centre; also returns the pixel-centre radii from the image centre."""
    rows, cols = np.mgrid[:size, :size] + 0.5
    r = np.hypot(rows - size / 2, cols - size / 2)
    r_lumen = np.hypot(rows - size / 2 - lumen_offset[0], cols - size / 2 - lumen_offset[1])
    return (r_lumen >= a) & (r <= b), r


def irregular_vessel(size: int = 64) -> np.ndarray:
    """An eccentric wall around a lobed (non-convex) lumen."""
    rows, cols = np.mgrid[:size, :size] + 0.5
    y, x = rows - size / 2, cols - size / 2
    theta = np.arctan2(y - 2, x + 3)
    lumen_radius = 11 * (1 + 0.15 * np.cos(3 * theta) + 0.08 * np.sin(2 * theta))
    return (np.hypot(y - 2, x + 3) > lumen_radius) & (np.hypot(y, x) < 25)


def small_ring() -> np.ndarray:
    return annulus(4, 8, size=20)[0]


@pytest.fixture(scope="module")
def small_model() -> WallModel:
    wall, lumen = segment_mask(small_ring())
    return WallModel(build_mesh(wall, lumen, pixel_mm=0.1), MooneyRivlin())


# --------------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a, b", [(10, 20), (9, 22)])
def test_linear_annulus_matches_thick_walled_cylinder(a, b):
    pressure = 16.0
    mask, r = annulus(a, b)
    stress = FEMLabeler("linear", pressure_kpa=pressure).label(mask)
    exact = np.sqrt(3) * pressure * a**2 * b**2 / ((b**2 - a**2) * r**2)
    interior = mask & (r >= a + 1.5) & (r <= b - 1.5)
    error = np.abs(stress[interior] - exact[interior]) / exact[interior]
    assert error.mean() < 0.04


def test_boundary_smoothing_beats_the_pixel_staircase():
    a, b = 10, 20
    mask, r = annulus(a, b)
    exact = np.sqrt(3) * 16.0 * a**2 * b**2 / ((b**2 - a**2) * r**2)
    interior = mask & (r >= a + 1.5) & (r <= b - 1.5)

    def mean_error(**options):
        stress = FEMLabeler("linear", **options).label(mask)
        return np.mean(np.abs(stress[interior] - exact[interior]) / exact[interior])

    assert mean_error() < 0.5 * mean_error(smoothing_sigma_px=0.0)


def test_mooney_rivlin_tends_to_linear_as_pressure_vanishes():
    mask = annulus(10, 20)[0]
    linear = FEMLabeler("linear").label(mask) / 16.0  # linear stress per kPa

    def difference(pressure):
        nonlinear = FEMLabeler("mooney-rivlin", pressure_kpa=pressure).label(mask) / pressure
        return np.linalg.norm(nonlinear - linear) / np.linalg.norm(linear)

    d1, d2, d4 = difference(0.01), difference(0.02), difference(0.04)
    assert d1 < 1e-3
    assert 1.7 < d2 / d1 < 2.3
    assert 1.7 < d4 / d2 < 2.3


@pytest.mark.parametrize("material", ["mooney-rivlin", "linear"])
def test_stress_does_not_depend_on_pixel_size(material):
    mask = irregular_vessel()
    fine = FEMLabeler(material, pixel_mm=0.1).label(mask)
    coarse = FEMLabeler(material, pixel_mm=0.25).label(mask)
    assert np.abs(fine - coarse).max() <= 1e-6 * np.abs(fine).max()


MASKS = {
    "annulus": annulus(12, 24)[0],
    "eccentric": annulus(10, 24, lumen_offset=(4.0, -5.0))[0],
    "irregular lumen": irregular_vessel(),
}


@pytest.mark.parametrize("name", MASKS)
def test_mooney_rivlin_converges_on_realistic_masks(name):
    mask = MASKS[name]
    stress = FEMLabeler("mooney-rivlin", pressure_kpa=16.0).label(mask)
    assert stress.dtype == np.float32 and stress.shape == mask.shape
    wall = clean_mask(mask)
    assert np.isfinite(stress).all()
    assert (stress[wall] > 0).all()
    assert (stress[~wall] == 0).all()
    # Under lumen pressure the wall is most stressed near the lumen.
    _, lumen = segment_mask(mask)
    near_lumen = wall & _dilate(lumen)
    assert stress[near_lumen].mean() > stress[wall].mean()


def _dilate(region: np.ndarray) -> np.ndarray:
    grown = region.copy()
    grown[1:] |= region[:-1]
    grown[:-1] |= region[1:]
    grown[:, 1:] |= region[:, :-1]
    grown[:, :-1] |= region[:, 1:]
    return grown


# --------------------------------------------------------------------------------------------------
# Model: tangent, assembly, load, constraints
# --------------------------------------------------------------------------------------------------


def _isochoric_energy_3d(f3: np.ndarray, material: MooneyRivlin) -> float:
    i1_bar = np.linalg.det(f3) ** (-2 / 3) * np.trace(f3.T @ f3)
    return material.c1 * (i1_bar - 3) + material.d1 * (np.exp(material.d2 * (i1_bar - 3)) - 1)


def test_von_mises_is_that_of_the_3d_cauchy_stress():
    material = MooneyRivlin()
    f = np.eye(2) + 0.15 * np.random.default_rng(1).standard_normal((2, 2))  # compressible too
    f3 = np.eye(3)
    f3[:2, :2] = f
    # Cauchy stress sigma = (dW/dF) F^T / J of the 3-D F (sigma_zz included), by central differences;
    # the volumetric part only adds a pressure, which von Mises ignores.
    step = 1e-6
    piola = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            e = np.zeros((3, 3))
            e[i, j] = step
            difference = _isochoric_energy_3d(f3 + e, material) - _isochoric_energy_3d(f3 - e, material)
            piola[i, j] = difference / (2 * step)
    sigma = piola @ f3.T / np.linalg.det(f3)
    deviator = sigma - np.trace(sigma) / 3 * np.eye(3)
    expected = np.sqrt(1.5 * (deviator**2).sum())
    assert material.von_mises(f.ravel()) == pytest.approx(expected, rel=1e-6)
    assert abs(deviator[2, 2]) > 0.1 * expected  # the out-of-plane stress matters here


def test_linear_von_mises_is_the_small_strain_limit():
    material = MooneyRivlin()
    grad_u = np.array([0.3, -0.2, 0.5, 0.1])  # with a volume change, so sigma_zz matters
    h = 1e-6
    finite = material.von_mises(np.array([1.0, 0.0, 0.0, 1.0]) + h * grad_u) / h
    assert material.linear_von_mises(grad_u) == pytest.approx(finite, rel=1e-5)


def _deformed_state(model: WallModel, pressure: float) -> np.ndarray:
    """The equilibrium at ``pressure`` plus a perturbation: a non-trivial, non-equilibrium state."""
    u = model.solve_nonlinear(pressure)
    return u + 0.1 * np.abs(u).max() * np.random.default_rng(0).standard_normal(u.shape)


def _finite_difference_tangent(model: WallModel, u: np.ndarray, pressure: float, step: float = 1e-7):
    columns = []
    for dof in range(model.n_dofs):
        e = np.zeros(model.n_dofs)
        e[dof] = step
        columns.append((model.residual(u + e, pressure) - model.residual(u - e, pressure)) / (2 * step))
    return np.stack(columns, axis=1)


def test_tangent_matches_finite_differences(small_model):
    pressure = 16.0
    u = _deformed_state(small_model, pressure)
    tangent = small_model.tangent(u, pressure).toarray()
    numeric = _finite_difference_tangent(small_model, u, pressure)
    assert np.linalg.norm(tangent - numeric) <= 1e-5 * np.linalg.norm(tangent)

    # The follower-pressure part on its own (the load stiffness -p d2A/du2).
    load_tangent = tangent - small_model.tangent(u, 0.0).toarray()
    load_numeric = numeric - _finite_difference_tangent(small_model, u, 0.0)
    assert np.abs(load_tangent).max() > 0
    assert np.linalg.norm(load_tangent - load_numeric) <= 1e-5 * np.linalg.norm(load_tangent)


def test_pressure_acts_on_the_lumen_border_only_and_is_self_equilibrated(small_model):
    u = _deformed_state(small_model, 16.0)
    forces = small_model.pressure_load(u, 16.0).reshape(-1, 2)
    loaded = np.flatnonzero(np.abs(forces).sum(1) > 0)
    assert set(loaded) <= set(small_model.mesh.lumen_edges.ravel())
    x = small_model.mesh.nodes + u.reshape(-1, 2)
    scale = np.abs(forces).sum()
    assert np.abs(forces.sum(0)).max() < 1e-12 * scale
    moment = (x[:, 0] * forces[:, 1] - x[:, 1] * forces[:, 0]).sum()
    assert abs(moment) < 1e-12 * scale * np.abs(x).max()


def test_pins_fix_three_components_and_carry_no_reaction(small_model):
    assert len(small_model.fixed) == 3
    u = small_model.solve_nonlinear(16.0)
    residual = small_model.residual(u, 16.0)
    load = np.linalg.norm(small_model.pressure_load(u, 16.0))
    assert np.abs(residual[small_model.fixed]).max() < 1e-6 * load
    assert np.all(u[small_model.fixed] == 0)


def test_pins_avoid_thin_spurs():
    mask = annulus(10, 20)[0]
    mask[32, 52:58] = True  # a one-pixel spur on the outer border, longer than the wall is thick
    wall, lumen = segment_mask(mask)
    model = WallModel(build_mesh(wall, lumen), MooneyRivlin())
    spur_nodes = model.mesh.elements[model.mesh.pixels[:, 1] >= 52].ravel()
    assert not np.isin(model.fixed // 2, spur_nodes).any()
    assert np.isfinite(FEMLabeler("mooney-rivlin").label(mask)).all()


def test_smoothing_keeps_pixel_areas_and_valid_elements():
    mask = irregular_vessel()
    wall, lumen = segment_mask(mask)
    mesh = build_mesh(wall, lumen, pixel_mm=1.0)
    model = WallModel(mesh, MooneyRivlin())
    # The lumen area A is quadratic in the node coordinates x, so A = x . dA/dx / 2.
    lumen_area = model.pressure_load(np.zeros(model.n_dofs), 1.0) @ mesh.nodes.ravel() / 2
    # The segmented lumen and vessel areas are kept (up to the limits on node moves).
    assert lumen_area == pytest.approx(lumen.sum(), rel=0.01)
    assert model.areas.sum() == pytest.approx(wall.sum(), rel=0.01)
    assert model.areas.min() > 0.25
    # Every element still sits on its pixel: its centre is within half a pixel of the pixel centre.
    centres = mesh.nodes[mesh.elements].mean(axis=1)[:, ::-1]
    assert np.abs(centres - (mesh.pixels + 0.5)).max() < 0.5


# --------------------------------------------------------------------------------------------------
# Bad masks
# --------------------------------------------------------------------------------------------------


def test_empty_mask_is_refused():
    with pytest.raises(LabelError, match="empty mask"):
        clean_mask(np.zeros((64, 64), dtype=bool))


def test_open_ring_is_refused():
    mask, _ = annulus(10, 20)
    mask[:, 30:34] &= np.arange(64)[:, None] > 32  # cut the upper side of the ring
    with pytest.raises(LabelError, match="no enclosed lumen"):
        clean_mask(mask)


def test_wall_touching_the_image_border_is_refused():
    mask = np.roll(annulus(10, 20)[0], 13, axis=1)
    with pytest.raises(LabelError, match="touches the image border"):
        clean_mask(mask)


def test_several_wall_pieces_are_refused():
    ring = annulus(4, 8, size=30)[0]
    mask = np.zeros((64, 64), dtype=bool)
    mask[2:32, 2:32] = ring
    mask[33:63, 33:63] = ring
    with pytest.raises(LabelError, match="2 separate wall pieces"):
        clean_mask(mask)


def test_specks_are_dropped():
    ring = annulus(10, 20)[0]
    mask = ring.copy()
    mask[3, 3] = mask[3, 4] = True  # a speck
    mask[31:33, 31:33] = True  # a speck inside the lumen
    assert np.array_equal(clean_mask(mask), ring)


def test_voids_in_the_wall_are_filled():
    ring = annulus(10, 20)[0]
    mask = ring.copy()
    mask[32, 47] = False  # a one-pixel hole inside the wall
    cleaned = clean_mask(mask)
    assert np.array_equal(cleaned, ring)
    assert np.isfinite(FEMLabeler("linear").label(mask)).all()


def _checkerboards(mask: np.ndarray) -> np.ndarray:
    """2x2 blocks whose two wall pixels touch only at a corner."""
    a, b, c, d = mask[:-1, :-1], mask[:-1, 1:], mask[1:, :-1], mask[1:, 1:]
    return (a & d & ~b & ~c) | (b & c & ~a & ~d)


def test_a_pixel_touching_the_wall_at_a_corner_is_joined():
    ring = annulus(10, 20)[0]
    four = ndimage.convolve(ring.astype(int), [[0, 1, 0], [1, 0, 1], [0, 1, 0]], mode="constant")
    eight = ndimage.convolve(ring.astype(int), np.ones((3, 3), int), mode="constant")
    row, col = np.argwhere(~ring & (four == 0) & (eight > 0) & (np.arange(64) > 45))[0]
    mask = ring.copy()
    mask[row, col] = True  # touches the ring only at a corner
    assert _checkerboards(mask).any()
    cleaned = clean_mask(mask)
    assert cleaned[row, col] and (cleaned & ~mask).sum() == 1 and not (mask & ~cleaned).any()
    assert not _checkerboards(cleaned).any()
    assert np.isfinite(FEMLabeler("mooney-rivlin").label(mask)).all()


def test_a_thin_ring_closed_only_at_corners_encloses_its_lumen():
    _, r = annulus(0, 0)
    mask = np.abs(r - 12) < 0.5  # a one-pixel digital circle: 8-connected, not 4-connected
    assert ndimage.label(mask)[1] > 1 and ndimage.label(mask, np.ones((3, 3)))[1] == 1
    wall, lumen = segment_mask(mask)
    assert not _checkerboards(wall).any()
    assert lumen.sum() == pytest.approx(np.pi * 11.5**2, rel=0.05)
    assert np.isfinite(FEMLabeler("linear").label(mask)).all()


def test_cleaning_a_cleaned_mask_changes_nothing():
    """FEMLabeler labels the cleaned mask, and segments it again to find its lumen."""
    ring, r = annulus(10, 20)
    speckled, holed = ring.copy(), ring.copy()
    speckled[3, 3] = speckled[31:33, 31:33] = True
    holed[32, 47] = False
    corners_only = np.abs(r - 12) < 0.5  # joined at its diagonal contacts
    for mask in (speckled, holed, corners_only, irregular_vessel()):
        wall, lumen = segment_mask(mask)
        again, lumen_again = segment_mask(wall)
        assert np.array_equal(again, wall) and np.array_equal(lumen_again, lumen)


def test_tiny_lumen_is_accepted():
    mask = annulus(0, 15)[0]
    mask[31, 31] = False  # a one-pixel lumen
    _, lumen = segment_mask(mask)
    assert lumen.sum() == 1
    stress = FEMLabeler("mooney-rivlin").label(mask)
    assert np.isfinite(stress).all() and stress.max() > 0


def test_non_convergence_raises_label_error():
    labeler = FEMLabeler("mooney-rivlin", pressure_kpa=16.0, max_newton_iter=1, max_step_cuts=1)
    with pytest.raises(LabelError, match="did not converge"):
        labeler.label(annulus(10, 20)[0])


# --------------------------------------------------------------------------------------------------
# Labeler API and batches
# --------------------------------------------------------------------------------------------------


def test_settings_are_json_and_cover_the_solver():
    settings = FEMLabeler("linear", pressure_kpa=12.0, newton_rtol=1e-9).settings()
    assert json.loads(json.dumps(settings)) == settings
    assert settings["fem_version"] == fem.FEM_VERSION
    assert settings["material"] == "linear" and settings["pressure_kpa"] == 12.0
    assert settings["newton_rtol"] == 1e-9 and "bulk_ratio" in settings and "pixel_mm" in settings


def test_unknown_options_are_rejected():
    with pytest.raises(TypeError, match="unknown solver options"):
        FEMLabeler(tolerance=1e-3)
    with pytest.raises(ValueError, match="material"):
        FEMLabeler("neo-hookean")


def _batch():
    good = annulus(10, 20)[0]
    open_ring = good.copy()
    open_ring[:, 30:34] &= np.arange(64)[:, None] > 32
    speckled = good.copy()
    speckled[3, 3] = True
    return np.stack([good, open_ring, speckled, np.zeros_like(good), good.astype(np.uint8) * 255])


def test_label_batch_reports_failures_without_raising():
    masks = _batch()
    result = FEMLabeler("linear").label_batch(masks, workers=1, progress=False)
    assert result.stress.shape == masks.shape and result.stress.dtype == np.float32
    assert result.ok.tolist() == [True, False, True, False, True]
    assert set(result.errors) == {1, 3}
    assert "no enclosed lumen" in result.errors[1] and "empty mask" in result.errors[3]
    assert (result.stress[~result.ok] == 0).all()
    # The masks solved: cleaned where cleaning worked (the speck is gone), raw where it failed.
    assert np.array_equal(result.masks[2], masks[0]) and np.array_equal(result.masks[1], masks[1])
    assert np.array_equal(result.stress[0], FEMLabeler("linear").label(masks[0]))
    assert np.array_equal(result.stress[4], result.stress[0])


def test_label_batch_in_worker_processes_matches_in_process():
    masks = _batch()
    labeler = FEMLabeler("linear")
    serial = labeler.label_batch(masks, workers=1, progress=False)
    parallel = labeler.label_batch(masks, workers=2, progress=False)
    assert np.array_equal(serial.stress, parallel.stress)
    assert np.array_equal(serial.ok, parallel.ok) and serial.errors == parallel.errors
    assert np.array_equal(serial.masks, parallel.masks)
    assert multiprocessing.active_children() == []


def test_label_batch_works_with_the_spawn_start_method():
    script = (
        "import multiprocessing, numpy as np\n"
        "from labelers.fem import FEMLabeler\n"
        "if __name__ == '__main__':\n"
        "    multiprocessing.set_start_method('spawn')\n"
        "    rows, cols = np.mgrid[:48, :48] + 0.5\n"
        "    r = np.hypot(rows - 24, cols - 24)\n"
        "    masks = np.stack([(r >= a) & (r <= 18) for a in (8, 9, 10)])\n"
        "    result = FEMLabeler('linear').label_batch(masks, workers=2, progress=False)\n"
        "    assert result.ok.all() and multiprocessing.active_children() == []\n"
        "    print('ok', result.stress.max())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


@pytest.mark.parametrize(
    "option, value, allowed",
    [
        ("initial_load_steps", 0, "an integer >= 1"),
        ("initial_load_steps", 2.0, "an integer >= 1"),
        ("max_newton_iter", 0, "an integer >= 1"),
        ("max_newton_iter", True, "an integer >= 1"),
        ("max_newton_iter", "20", "an integer >= 1"),
        ("max_step_cuts", -1, "an integer >= 0"),
        ("smoothing_sigma_px", -0.5, "a finite number >= 0.0"),
        ("smoothing_sigma_px", float("nan"), "a finite number >= 0.0"),
        ("newton_rtol", 0.0, r"a finite number in \(0.0, 1.0\)"),
        ("newton_rtol", 1.5, r"a finite number in \(0.0, 1.0\)"),
        ("newton_rtol", float("inf"), r"a finite number in \(0.0, 1.0\)"),
        ("bulk_ratio", 0.0, "a finite number > 0.0"),
        ("c1_kpa", -0.1, "a finite number >= 0.0"),
        ("d1_kpa", float("nan"), "a finite number >= 0.0"),
        ("d2", -1.0, "a finite number >= 0.0"),
        ("d2", None, "a finite number >= 0.0"),
        ("pressure_kpa", float("inf"), "a finite number > 0.0"),
        ("pressure_kpa", -16.0, "a finite number > 0.0"),
        ("pixel_mm", 0, "a finite number > 0.0"),
    ],
)
def test_bad_solver_options_are_refused(option, value, allowed):
    with pytest.raises(ValueError, match=rf"^{option} must be {allowed}, got {re.escape(repr(value))}"):
        FEMLabeler("mooney-rivlin", **{option: value})


def test_solver_options_are_checked_together_and_kept_as_given():
    with pytest.raises(ValueError, match=r"shear modulus 2 \(c1_kpa \+ d1_kpa \* d2\) must be positive"):
        FEMLabeler(c1_kpa=0.0, d2=0.0)
    with pytest.raises(ValueError, match="initial_load_steps must be an integer >= 1"):
        fem.FEMParams(initial_load_steps=0)
    # Valid values keep the settings, and so the cache keys, they always had.
    default = FEMLabeler().settings()
    assert FEMLabeler(max_newton_iter=np.int64(20), smoothing_sigma_px=np.float64(1.0)).settings() == default
    assert FEMLabeler(bulk_ratio=2000).settings() == {**default, "bulk_ratio": 2000}
    assert FEMLabeler(pressure_kpa=16, max_pixels=None).settings() == default


def test_oversized_masks_are_refused_before_any_work(monkeypatch):
    monkeypatch.setattr(fem, "_label_one", None)  # never called
    big = annulus(100, 200, size=512)[0]
    with pytest.raises(LabelError, match=r"512x512 = 262144 pixels is over .* limit of max_pixels=65536"):
        FEMLabeler().label(big)
    result = FEMLabeler(max_pixels=100_000).label_batch(big[None], workers=1, progress=False)
    assert not result.ok[0] and "max_pixels=100000" in result.errors[0]
    assert FEMLabeler(max_pixels=None).max_pixels is None
    with pytest.raises(ValueError, match="max_pixels"):
        FEMLabeler(max_pixels=0)
