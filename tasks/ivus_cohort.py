"""Seeded synthetic cohort of IVUS-like coronary vessel-wall segmentation masks.

The IVUS task of Mo et al., "Efficient deep representation learning by adaptive latent space
sampling" (Sec. 4, Appendix A.2), uses 1,200 2-D intravascular-ultrasound (IVUS) slices of
coronary plaques: the vendor's vessel-wall segmentation (512x512) is resampled to 64x64 and a
finite-element (FE) solver maps it to a structural-stress map; 990 slices form the pool and 210
a held-out test set. Those data are not public, so :func:`make_cohort` synthesises a cohort of
the same size with realistic coronary cross-sections that are valid FE domains.

Geometry
--------
Each mask is the vessel wall (plaque + media) between two smooth closed star-shaped curves:

* EEM (external elastic membrane), polar about the vessel centre ``c_E``:
  ``r_E(phi) = R * (1 + e * cos(2 * (phi - psi)))``, a circle with mild ellipticity ``e``.
* Lumen, polar about the lumen centre ``c_L``:
  ``r_L(theta) = rho * (1 + sum_k a_k * cos(k * theta - phase_k))`` for ``k = 2..5``, a smooth
  irregularity of a few low-order harmonics with decaying amplitudes.
* ``c_L`` is ``c_E`` moved by ``d`` away from the plaque direction ``rotation_rad``, so the wall
  is an eccentric crescent: thickest towards ``rotation_rad``, thinnest opposite.

``R`` and ``rho`` are scaled so that the EEM area is the drawn one and the lumen area is
exactly ``(1 - plaque_burden)`` times it. A pixel is wall when its centre lies inside the EEM
and outside the lumen. Rasterisation is vectorised over masks and pixels; per pixel it uses
only ``+ - * /`` and ``sqrt`` (harmonics by angle-addition recursion), which IEEE 754 rounds
identically on every platform.

Pixel size
----------
``PIXEL_MM = 0.1`` mm: the 64x64 masks cover a vessel-centred ``FIELD_OF_VIEW_MM = 6.4`` mm
square. Coronary IVUS catheters (20-60 MHz) resolve about 0.1-0.15 mm axially (Termedia
review of IVUS in acute coronary syndromes; Gamal, Ahmed & Mintz, "Coronary intravascular
ultrasound", CRC 2017), so a 0.1 mm grid keeps what IVUS can resolve. Resampling a typical
full ~10 mm IVUS display to 64 px instead (0.156 mm/px) would draw a 3-4 mm vessel only
19-26 px wide with a 2-4 px wall: too coarse for two FE elements across the thin side of an
eccentric plaque. 6.4 mm holds the largest EEM drawn here (5.5 mm) with a 2 px margin.

Parameter distributions and sources
-----------------------------------
* EEM area-equivalent diameter ~ triangular(3.0, mode 4.0, 5.5) mm: EEM area 7-24 mm^2, mean
  ~14 mm^2. Normal lumen diameters are 4.5 +/- 0.5 mm (left main), 3.7 +/- 0.4 mm (proximal
  LAD), 3.9 +/- 0.6 mm (proximal RCA) and 3.4-4.2 mm (circumflex) (Dodge et al., Circulation
  1992;86:232); IVUS vessel areas at lesions are 13.3 +/- 3.0 and 17.5 +/- 5.6 mm^2, at distal
  reference sites 14.4 +/- 3.6 and 14.0 +/- 6.0 mm^2 (von Birgelen et al., Heart 1998;79:137).
  Smaller (distal) segments are left out: on this grid their wall would be 3 px thick only at
  burdens above ~0.4.
* Plaque burden ``1 - lumen area / EEM area`` (ACC consensus, Mintz et al., JACC
  2001;37:1478) ~ triangular(0.2, mode 0.5, 0.8): mean 0.50, SD 0.12. VH-IVUS at the
  minimum-lumen site gives 52 +/- 13 % (non-culprit lesions in ACS) and 54 +/- 14 % (target
  lesions in stable angina) (Hong et al., Korean Circ J 2013;43(9)); >75 % stenoses carry
  73-78 % (Surmely et al., Heart 2007;93:928); PB >= 70 % marks high-risk plaque (PROSPECT II,
  Erlinge et al., Lancet 2021;397:985). Draws whose wall cannot be ``MIN_WALL_PX`` thick are
  redrawn (see below); a 0.3 mm wall at PB 0.21 needs a 5.5 mm vessel, so burdens under ~0.3
  occur only in the largest vessels.
* Eccentricity index ``EI`` = max / min plaque+media thickness along rays through the lumen
  centre. Target ``EI - 1 ~ lognormal(mu=0.549, sigma=0.807)``, giving mean 3.4, SD 2.3, 43 %
  with EI > 3 and no exactly concentric plaque, as measured by IVUS in 963 native target
  lesions (mean 3.4 +/- 2.3, 43.5 % EI > 3, <1 % concentric; JACC abstract 934-26, "Comparison
  of IVUS and coronary angiography in the assessment of target lesion plaque distribution").
  The lumen offset giving that EI for circles is reduced until the thinnest wall is
  ``MIN_WALL_PX``, so thin walls are less eccentric than the target (real eccentric plaques can
  be ~0.2 mm thin on the free side). ``params["eccentricity_index"]`` is the realised EI.
* ``rotation_rad ~ U[0, 2 pi)`` (plaque direction). EEM orientation and lumen harmonic phases
  are independent and uniform, so every configuration has a random rotation.
* EEM ellipticity ``e ~ U[0, 0.05]`` (max/min diameter <= 1.105). Assumption: near-circular
  EEM in non-bifurcation segments imaged near-perpendicular to the vessel axis.
* Lumen harmonics ``a_k = s * (2 / k)^2 * U[0, 1]`` with ``s ~ U[0, 0.1]`` and uniform phases;
  ``sum_k a_k < 0.19`` keeps the lumen star-shaped. ``lumen_irregularity`` is the RMS relative
  radius deviation. Assumption: smooth vendor contours resampled to 64x64 keep only low-order
  shape variation.
* EEM centre offset from the image centre: uniform in a disc of radius
  ``min(CENTRE_OFFSET_MAX_PX, room left by the 2 px margin)``, i.e. at most 0.2 mm.

FE validity (by construction, then verified)
---------------------------------------------
:func:`valid_masks` checks, with ``scipy.ndimage``: exactly one 4-connected wall component; the
other pixels form exactly two 4-connected components, the outside (touching the frame) and an
enclosed lumen of at least ``MIN_LUMEN_PX`` pixels (so no specks and no holes); no 2x2 window
with a diagonal-only (checkerboard) contact; no wall pixel within ``BORDER_MARGIN_PX`` of the
frame; and no wall pixel touching, even by a corner, both the lumen and the outside, i.e. at
least two FE elements across the wall everywhere. The construction keeps the continuous wall
at least ``MIN_WALL_PX`` = 3 px (0.3 mm) > 2 * sqrt(2) px thick along rays through the lumen
centre and the EEM inside the margin, which makes the rules hold; a draw that is infeasible or
fails a rule is redrawn from the same mask's stream (about 12 % of masks need a redraw, all
for infeasible thin walls: none of ~53,000 feasible test draws failed a pixel rule).

Determinism
-----------
Mask ``i`` is drawn from its own stream, ``SeedSequence(seed).spawn(n)[i]`` driving PCG64,
``N_UNIFORMS`` uniforms per draw. The same ``(n, seed, size)`` gives a bit-identical cohort,
and ``make_cohort(n, seed)[:m]`` equals ``make_cohort(m, seed)``: growing ``n`` appends masks.
Only ``log``, ``exp``, ``cos`` and ``sin`` of per-mask parameters may differ by an ulp between
math libraries, which cannot change a mask unless a pixel centre lies within ~1e-12 px of a
contour or a draw within as little of a feasibility limit. NumPy keeps PCG64 streams fixed but
does not promise ``Generator`` output across versions (NEP 19).

Default cohort (n=1200, seed=0, size=64), measured from the masks: plaque burden
min/median/max 0.26/0.52/0.80 (5th-95th percentile 0.36-0.71); wall 319-1674 pixels (median
689); realised EI 1.2-7.5 (median 2.4, 26 % > 3); minimum wall 0.30-1.05 mm; lumen area
1.7-15.1 mm^2. Generation takes about 1 s on one CPU core.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FIELD_OF_VIEW_MM = 6.4
PIXEL_MM: float = FIELD_OF_VIEW_MM / 64
COHORT_SIZE = 1200
POOL_SIZE = 990
TEST_SIZE = 210

# Distributions and limits; the module docstring gives their sources.
EEM_DIAMETER_MM = (3.0, 4.0, 5.5)  # triangular (min, mode, max)
PLAQUE_BURDEN = (0.2, 0.5, 0.8)  # triangular (min, mode, max)
ECCENTRICITY_LOG_MU = 0.549  # EI - 1 ~ lognormal(mu, sigma)
ECCENTRICITY_LOG_SIGMA = 0.807
EEM_ELLIPTICITY_MAX = 0.05
LUMEN_HARMONICS = (2, 3, 4, 5)
LUMEN_IRREGULARITY_MAX = 0.1  # amplitude bound of the 2nd harmonic
CENTRE_OFFSET_MAX_PX = 2.0
MIN_WALL_PX = 3.0
BORDER_MARGIN_PX = 2
MIN_LUMEN_PX = 8
N_UNIFORMS = 10 + 2 * len(LUMEN_HARMONICS)  # uniforms consumed per parameter draw

_PARAM_NAMES = (
    "eem_diameter_mm",
    "eem_area_mm2",
    "lumen_area_mm2",
    "plaque_burden",
    "eccentricity_index",
    "min_wall_mm",
    "max_wall_mm",
    "lumen_offset_mm",
    "rotation_rad",
    "eem_ellipticity",
    "eem_orientation_rad",
    "lumen_irregularity",
    "centre_row_px",
    "centre_col_px",
)
_RAYS = 256  # rays through the lumen centre for wall thickness
_RAY_ITERATIONS = 6  # fixed-point steps to the EEM crossing of a ray (error < 1e-5 px)
_SHIFT_STEPS = 8  # steps towards the largest lumen offset that keeps MIN_WALL_PX
_WALL_TOLERANCE_PX = 0.01  # accepted shortfall of the thinnest wall below MIN_WALL_PX
_MAX_ROUNDS = 200  # redraw rounds before giving up
_CHUNK = 256  # masks rasterised at once (bounds memory)


@dataclass(frozen=True, eq=False)
class Cohort:
    """Synthetic IVUS cohort.

    ``masks`` is bool ``[N, size, size]`` (True = vessel-wall pixel, between lumen and EEM);
    ``params`` maps each generating/derived parameter name to an array of shape ``[N]``.
    """

    masks: np.ndarray
    params: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: slice | np.ndarray) -> Cohort:
        """Sub-cohort of the masks selected by a slice, an index array or a boolean array."""
        return Cohort(self.masks[index], {k: v[index] for k, v in self.params.items()})


def make_cohort(n: int = COHORT_SIZE, seed: int = 0, size: int = 64) -> Cohort:
    """Generate ``n`` valid vessel-wall masks of ``size`` x ``size`` pixels, deterministically.

    The field of view is fixed at ``FIELD_OF_VIEW_MM``, so the pixel size is
    ``FIELD_OF_VIEW_MM / size`` (``PIXEL_MM`` at the default 64). ``params`` holds, per mask:
    ``eem_diameter_mm`` (area-equivalent), ``eem_area_mm2``, ``lumen_area_mm2``,
    ``plaque_burden`` (of the continuous contours), ``eccentricity_index``, ``min_wall_mm`` and
    ``max_wall_mm`` (along rays through the lumen centre), ``lumen_offset_mm`` (lumen centre to
    EEM centre), ``rotation_rad`` (direction of the thickest wall, measured from the +column
    axis towards the +row axis), ``eem_ellipticity``, ``eem_orientation_rad``,
    ``lumen_irregularity`` (RMS relative lumen-radius deviation), ``centre_row_px`` and
    ``centre_col_px`` (EEM centre; pixel ``i`` spans ``[i, i + 1)``) and ``draws`` (parameter
    draws used, 1 + redraws).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 48:
        raise ValueError(f"size must be >= 48 pixels to hold the vessel sizes, got {size}")
    streams = [np.random.Generator(np.random.PCG64(child)) for child in np.random.SeedSequence(seed).spawn(n)]
    masks = np.zeros((n, size, size), dtype=bool)
    params = {name: np.zeros(n) for name in _PARAM_NAMES}
    draws = np.zeros(n, dtype=np.int64)
    todo = np.arange(n)
    for _ in range(_MAX_ROUNDS):
        if todo.size == 0:
            break
        draws[todo] += 1
        uniforms = np.stack([streams[i].random(N_UNIFORMS) for i in todo])
        shape = _shapes(uniforms, size)
        feasible = shape.pop("feasible")
        shape = {name: values[feasible] for name, values in shape.items()}
        candidates = _rasterise(shape, size)
        valid = valid_masks(candidates)
        accepted = np.zeros(todo.size, dtype=bool)
        accepted[feasible] = valid
        masks[todo[accepted]] = candidates[valid]
        for name, values in _describe(shape, size).items():
            params[name][todo[accepted]] = values[valid]
        todo = todo[~accepted]
    if todo.size:
        raise RuntimeError(f"{todo.size} masks still invalid after {_MAX_ROUNDS} draws")
    params["draws"] = draws
    return Cohort(masks, params)


def valid_masks(masks: np.ndarray) -> np.ndarray:
    """Bool ``[N]``: which of ``masks`` ``[N, H, W]`` are valid FE domains (see module doc)."""
    masks = np.asarray(masks, dtype=bool)
    if len(masks) == 0:
        return np.zeros(0, dtype=bool)
    m = BORDER_MARGIN_PX
    inner = np.zeros(masks.shape[1:], dtype=bool)
    inner[m:-m, m:-m] = True
    ok = ~(masks & ~inner).any(axis=(1, 2))

    a, b = masks[:, :-1, :-1], masks[:, :-1, 1:]
    c, d = masks[:, 1:, :-1], masks[:, 1:, 1:]
    ok &= ~((a & d & ~b & ~c) | (b & c & ~a & ~d)).any(axis=(1, 2))

    cross = _in_plane(ndimage.generate_binary_structure(2, 1))
    wall_labels, _ = ndimage.label(masks, structure=cross)
    ok &= _count_labels(wall_labels) == 1
    rest_labels, _ = ndimage.label(~masks, structure=cross)
    ok &= _count_labels(rest_labels) == 2

    outside = rest_labels == rest_labels[:, :1, :1]
    lumen = ~masks & ~outside
    ok &= lumen.sum(axis=(1, 2)) >= MIN_LUMEN_PX
    square = _in_plane(np.ones((3, 3), dtype=bool))
    near_lumen = ndimage.binary_dilation(lumen, structure=square, iterations=2)
    ok &= ~(near_lumen & outside).any(axis=(1, 2))
    return ok


def _in_plane(structure_2d: np.ndarray) -> np.ndarray:
    """3-D structuring element that links pixels of the same mask only."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = structure_2d
    return structure


def _count_labels(labels: np.ndarray) -> np.ndarray:
    """Number of distinct non-zero labels in each mask of a label volume ``[N, H, W]``."""
    flat = np.sort(labels.reshape(len(labels), -1), axis=1)
    changes = (flat[:, 1:] != flat[:, :-1]) & (flat[:, 1:] > 0)
    return changes.sum(axis=1) + (flat[:, 0] > 0)


def _triangular(u: np.ndarray, low: float, mode: float, high: float) -> np.ndarray:
    """Inverse CDF of the triangular distribution on ``[low, high]`` peaking at ``mode``."""
    left = low + np.sqrt(u * (high - low) * (mode - low))
    right = high - np.sqrt((1 - u) * (high - low) * (high - mode))
    return np.where(u < (mode - low) / (high - low), left, right)


def _shapes(u: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Contour parameters in pixel units from per-mask uniforms ``u`` ``[N, N_UNIFORMS]``.

    ``feasible`` flags draws that fit the frame with a wall of at least ``MIN_WALL_PX``.
    """
    pixel_mm = FIELD_OF_VIEW_MM / size
    # Columns of u: 0 EEM diameter, 1 plaque burden, 2-3 EI (Box-Muller), 4 plaque direction,
    # 5 ellipticity, 6 EEM orientation, 7 irregularity scale, 8-9 centre offset (radius, angle),
    # then the harmonic amplitudes and phases.
    k = len(LUMEN_HARMONICS)
    radius_eq = _triangular(u[:, 0], *EEM_DIAMETER_MM) / (2 * pixel_mm)
    burden = _triangular(u[:, 1], *PLAQUE_BURDEN)
    normal = np.sqrt(-2 * np.log1p(-u[:, 2])) * np.cos(2 * np.pi * u[:, 3])
    ei_target = 1 + np.exp(ECCENTRICITY_LOG_MU + ECCENTRICITY_LOG_SIGMA * normal)
    ellipticity = EEM_ELLIPTICITY_MAX * u[:, 5]
    decay = (2 / np.asarray(LUMEN_HARMONICS, dtype=float)) ** 2
    amplitude = LUMEN_IRREGULARITY_MAX * u[:, 7:8] * decay * u[:, 10 : 10 + k]
    phase = 2 * np.pi * u[:, 10 + k : 10 + 2 * k]
    radius = radius_eq / np.sqrt(1 + ellipticity**2 / 2)
    lumen_eq = radius_eq * np.sqrt(1 - burden)
    room = size / 2 - BORDER_MARGIN_PX - radius * (1 + ellipticity)
    offset = np.clip(room, 0, CENTRE_OFFSET_MAX_PX) * np.sqrt(u[:, 8])
    shape = {
        "radius_eq": radius_eq,
        "burden": burden,
        "rotation": 2 * np.pi * u[:, 4],
        "radius": radius,
        "ellipticity": ellipticity,
        "orientation": np.pi * u[:, 6],
        "rho": lumen_eq / np.sqrt(1 + (amplitude**2).sum(axis=1) / 2),
        "cos_amp": amplitude * np.cos(phase),
        "sin_amp": amplitude * np.sin(phase),
        "eem_x": size / 2 + offset * np.cos(2 * np.pi * u[:, 9]),
        "eem_y": size / 2 + offset * np.sin(2 * np.pi * u[:, 9]),
        "shift": np.zeros(len(u)),
    }
    # Lumen offset: the one giving the target EI for circles, capped where the thinnest wall
    # along rays through the lumen centre reaches MIN_WALL_PX. That wall thins by at most ~1 px
    # per px of offset, so each step moves up to the cap from below (overshoot < 0.01 px).
    thinnest = _ray_walls(shape).min(axis=1)
    target = (radius_eq - lumen_eq) * (ei_target - 1) / (ei_target + 1)
    for _ in range(_SHIFT_STEPS):
        shape["shift"] = np.clip(shape["shift"] + thinnest - MIN_WALL_PX, 0, target)
        thinnest = _ray_walls(shape).min(axis=1)
    shape["feasible"] = (room >= 0) & (thinnest >= MIN_WALL_PX - _WALL_TOLERANCE_PX)
    return shape


def _broadcast(
    shape: dict[str, np.ndarray],
    rows: slice,
    extra_dims: int,
) -> dict[str, np.ndarray]:
    """Rows ``rows`` of ``shape`` with ``extra_dims`` singleton axes after the mask axis."""
    out = {}
    for name, values in shape.items():
        values = values[rows]
        out[name] = values.reshape(values.shape[:1] + (1,) * extra_dims + values.shape[1:])
    return out


def _lumen_centre(s: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Lumen centre: the EEM centre moved by ``shift`` away from the plaque direction."""
    return (s["eem_x"] - s["shift"] * np.cos(s["rotation"]), s["eem_y"] - s["shift"] * np.sin(s["rotation"]))


def _eem_radius(
    qx: np.ndarray,
    qy: np.ndarray,
    q2: np.ndarray,
    s: dict[str, np.ndarray],
) -> np.ndarray:
    """EEM radius towards ``(qx, qy)`` from the EEM centre, with ``q2 = qx^2 + qy^2``."""
    q2 = np.maximum(q2, np.finfo(float).tiny)
    cos2 = (qx * qx - qy * qy) / q2
    sin2 = 2 * qx * qy / q2
    c, d = np.cos(2 * s["orientation"]), np.sin(2 * s["orientation"])
    return s["radius"] * (1 + s["ellipticity"] * (cos2 * c + sin2 * d))


def _lumen_radius(cos1: np.ndarray, sin1: np.ndarray, s: dict[str, np.ndarray]) -> np.ndarray:
    """Lumen radius towards the unit vector ``(cos1, sin1)`` from the lumen centre."""
    cos_k, sin_k = cos1, sin1
    relief = 0.0
    for k in range(2, max(LUMEN_HARMONICS) + 1):
        cos_k, sin_k = cos_k * cos1 - sin_k * sin1, sin_k * cos1 + cos_k * sin1
        if k in LUMEN_HARMONICS:
            h = LUMEN_HARMONICS.index(k)
            relief = relief + s["cos_amp"][..., h] * cos_k + s["sin_amp"][..., h] * sin_k
    return s["rho"] * (1 + relief)


def _ray_walls(shape: dict[str, np.ndarray]) -> np.ndarray:
    """Wall thickness ``[N, _RAYS]`` (px) along equally spaced rays from the lumen centre."""
    angles = 2 * np.pi * np.arange(_RAYS) / _RAYS
    ux, uy = np.cos(angles), np.sin(angles)
    s = _broadcast(shape, slice(None), 1)
    lumen_x, lumen_y = _lumen_centre(s)
    dx, dy = lumen_x - s["eem_x"], lumen_y - s["eem_y"]
    # Start from the exact crossing of the circle of radius R, then refine on the EEM contour.
    along = dx * ux + dy * uy
    reach = -along + np.sqrt(along * along + s["radius"] ** 2 - dx * dx - dy * dy)
    for _ in range(_RAY_ITERATIONS):
        qx, qy = dx + reach * ux, dy + reach * uy
        q2 = qx * qx + qy * qy
        reach = reach + _eem_radius(qx, qy, q2, s) - np.sqrt(q2)
    return reach - _lumen_radius(ux, uy, s)


def _rasterise(shape: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Wall masks ``[N, size, size]``: pixel centres inside the EEM and outside the lumen."""
    n = len(shape["radius"])
    masks = np.empty((n, size, size), dtype=bool)
    x = (np.arange(size) + 0.5)[None, None, :]
    y = (np.arange(size) + 0.5)[None, :, None]
    for start in range(0, n, _CHUNK):
        rows = slice(start, start + _CHUNK)
        s = _broadcast(shape, rows, 2)
        qx, qy = x - s["eem_x"], y - s["eem_y"]
        q2 = qx * qx + qy * qy
        in_eem = np.sqrt(q2) < _eem_radius(qx, qy, q2, s)
        lumen_x, lumen_y = _lumen_centre(s)
        px, py = x - lumen_x, y - lumen_y
        p = np.sqrt(px * px + py * py)
        safe = np.maximum(p, np.finfo(float).tiny)
        in_lumen = p < _lumen_radius(px / safe, py / safe, s)
        masks[rows] = in_eem & ~in_lumen
    return masks


def _describe(shape: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Per-mask parameters in physical units (names in ``_PARAM_NAMES``)."""
    pixel_mm = FIELD_OF_VIEW_MM / size
    walls = _ray_walls(shape)
    eem_area = np.pi * (shape["radius_eq"] * pixel_mm) ** 2
    return {
        "eem_diameter_mm": 2 * shape["radius_eq"] * pixel_mm,
        "eem_area_mm2": eem_area,
        "lumen_area_mm2": eem_area * (1 - shape["burden"]),
        "plaque_burden": shape["burden"],
        "eccentricity_index": walls.max(axis=1) / walls.min(axis=1),
        "min_wall_mm": walls.min(axis=1) * pixel_mm,
        "max_wall_mm": walls.max(axis=1) * pixel_mm,
        "lumen_offset_mm": shape["shift"] * pixel_mm,
        "rotation_rad": shape["rotation"],
        "eem_ellipticity": shape["ellipticity"],
        "eem_orientation_rad": shape["orientation"],
        "lumen_irregularity": np.sqrt((shape["cos_amp"] ** 2 + shape["sin_amp"] ** 2).sum(axis=1) / 2),
        "centre_row_px": shape["eem_y"],
        "centre_col_px": shape["eem_x"],
    }
