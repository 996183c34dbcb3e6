"""Anatomy of the phantom: the heart and its surroundings, drawn per patient and rendered as tissue
codes and ACDC labels on a scan's voxel grid.

Everything is a continuous geometric model in millimetres, evaluated on the voxel grid:

* The heart is a stack of short-axis cross-sections along the long axis (depth `d` below a tilted
  base plane, so the basal slice can be partly atrium). LV endocardium and epicardium are radii
  as functions of angle and depth: an ellipsoid-like profile times smooth random Fourier
  perturbations. The RV cavity is an ellipse pressed against the septal side of the epicardium,
  which gives a crescent that thins towards the apex and vanishes before it. Papillary muscles are
  dark blobs in the LV pool (labelled LV, as in ACDC), trabeculation is dark texture in the RV/LV.
* End-systole maps each slice to the ED material depth (the base descends: longitudinal
  shortening), shrinks the endocardium radially and keeps the local myocardial area, so the wall
  thickens by the right amount. Ejection fraction varies per patient and group.
* The ACDC groups drive the pathology: DCM dilated thin-walled poorly contracting LV, HCM thick
  (often septal) wall with a small cavity, MINF a thin akinetic wall segment, RV a dilated
  hypokinetic RV that flattens the septum, NOR normal.
* Around the heart, all labelled background: body outline with subcutaneous fat, lungs, liver in
  the lower slices, spine with spinal canal, descending aorta, atria above the base, epicardial fat
  -- with intensities that overlap the heart classes (fat and aorta as bright as blood, liver and
  muscle as grey as myocardium).

Tissue codes index the per-patient intensity table of acquisition.py; labels are ACDC's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")

# Tissue codes of the intermediate tissue map (index into the per-patient intensity table).
AIR, SOFT, FAT, LUNG, LIVER, BONE, CSF, AORTA, STOMACH = range(9)
ATRIAL_BLOOD, ATRIAL_WALL, EPI_FAT, RV_WALL, MYO, LV_BLOOD, RV_BLOOD, PAPILLARY, TRABECULA = range(9, 18)
N_TISSUES = 18

# Label values, as in ACDC.
LABEL_RV, LABEL_MYO, LABEL_LV = 1, 2, 3

N_HARMONICS = 4  # angular Fourier orders used for smooth shape perturbations


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    """A uniform draw as a Python float (NumPy scalars would promote float32 arrays to float64)."""
    return float(rng.uniform(low, high))


def _fourier_coefficients(rng: np.random.Generator, amplitude: float, depth_amplitude: float) -> np.ndarray:
    """(N_HARMONICS, 4) coefficients [cos at base, cos slope with depth, sin at base, sin slope].

    Amplitudes fall off as 1/order so the perturbation is smooth.
    """
    order = np.arange(1, N_HARMONICS + 1, dtype=np.float64)[:, None]
    scale = np.array([amplitude, depth_amplitude, amplitude, depth_amplitude])[None, :]
    return rng.normal(0.0, 1.0, size=(N_HARMONICS, 4)) * scale / order


@dataclass
class _Heart:
    """Per-patient heart model parameters (millimetres, radians, fractions)."""

    group: str
    cx: float  # LV axis position at the base, in-plane scene mm
    cy: float
    phi: float  # in-plane direction from the LV centre towards the RV (septum)
    length: float  # base to epicardial apex
    length_endo: float  # base to endocardial apex
    length_rv: float  # base to RV apex
    profile_q: float  # exponent of the base-to-apex radius profile (larger: blunter apex)
    r_endo: float  # LV cavity radius at the base (ED)
    wall: float  # myocardial wall thickness at the base (ED)
    tilt_x: float  # base plane slope (mm depth per mm in-plane), makes the basal slice partial
    tilt_y: float
    drift_x: float  # LV axis drift per mm of depth (the long axis is not exactly the slice normal)
    drift_y: float
    ef: float  # LV ejection fraction
    contraction: float  # ES/ED endocardial radius ratio
    shift: float  # longitudinal shortening at ES (base descent), mm
    rv_thickness: float  # RV crescent thickness at the base (ED)
    rv_bulge: float  # RV ellipse semi-axis towards the RV = epicardial radius + rv_bulge * thickness
    rv_span: float  # half the angle the RV crescent wraps around the LV (radians)
    rv_contraction: float  # ES/ED ratio of the RV crescent thickness (~ ES/ED RV volume)
    rv_wall: float  # RV free wall thickness (background label)
    septal_flattening: float  # RV overload pushes the septum into the LV
    septal_hypertrophy: float  # extra relative wall thickness at the septum (HCM)
    infarct_angle: float  # MINF: centre of the thin akinetic segment
    infarct_halfwidth: float
    infarct_depth: tuple[float, float]  # MINF: depth range (fraction of length)
    infarct_thinning: float  # MINF: remaining wall fraction in the segment
    papillary_angles: tuple[float, float]
    papillary_radius: float
    fat_thickness: float  # epicardial fat band, mm
    fat_offset: float  # shifts the random fat pattern: larger, more fat around the heart
    atrial_depth: float  # how far above the base the atria reach
    endo_coef: np.ndarray
    wall_coef: np.ndarray
    contraction_coef: np.ndarray
    rv_coef: np.ndarray
    fat_coef: np.ndarray

    def extent(self) -> float:
        """How far heart tissue usually reaches from the LV axis in-plane (mm).

        From the shape limits: radius perturbations are clipped to 1.4 (cavity) and 1.6 (wall,
        RV thickness); the RV ellipse is at most ~1.75 epicardial radii wide. Rare outliers (a
        thick fat patch) are caught by the renderer, which widens its window when needed.
        """
        r_epi = self.r_endo + self.wall
        lv = 1.4 * self.r_endo + 1.6 * self.wall * (1.0 + self.septal_hypertrophy) + 1.5 * self.fat_thickness
        rv = max(1.8 * r_epi, r_epi + 1.6 * self.rv_thickness + self.rv_wall)
        drift = np.hypot(self.drift_x, self.drift_y) * self.length
        return float(max(lv, rv) + drift)


@dataclass
class _Body:
    """Surrounding anatomy in a body frame (p: patient left, q: anterior), millimetres."""

    bx: float  # body centre, scene mm
    by: float
    rot: float  # rotation of the body frame in the scene
    half_width: float  # A: left-right semi-axis
    half_depth: float  # B: antero-posterior semi-axis
    squareness: float  # superellipse exponent of the body outline
    fat: float  # subcutaneous fat thickness
    liver_start: float  # depth below the base where the liver appears
    liver_ramp: float
    spine_radius: float
    aorta_radius: float
    lung_coef: np.ndarray  # (2, N_HARMONICS, 4) outline perturbations of the left/right lung
    liver_coef: np.ndarray  # (N_HARMONICS, 4)
    rib_angles: np.ndarray  # positions of rib cross-sections along the outline (radians)
    fat_blobs: np.ndarray  # (n, 4) mediastinal fat: p, q, semi-axis p, semi-axis q


def _sample_heart(rng: np.random.Generator, group: str, phi: float) -> _Heart:
    """Heart shape, motion and pathology for one patient; the caller places it (cx, cy)."""
    scale = _u(rng, 0.9, 1.1)  # overall heart size
    # Group-specific ranges: (LV cavity radius, wall, EF, RV crescent thickness, RV half-span in
    # degrees, RV EF, length).
    if group == "DCM":
        r_endo, wall, ef = _u(rng, 30, 37), _u(rng, 5.5, 8), _u(rng, 0.1, 0.3)
        rv_t, span, rv_ef, length = _u(rng, 18, 28), _u(rng, 70, 90), _u(rng, 0.25, 0.5), _u(rng, 88, 108)
    elif group == "HCM":
        r_endo, wall, ef = _u(rng, 17, 22), _u(rng, 13, 18), _u(rng, 0.62, 0.8)
        rv_t, span, rv_ef, length = _u(rng, 16, 24), _u(rng, 60, 80), _u(rng, 0.5, 0.65), _u(rng, 72, 90)
    elif group == "MINF":
        r_endo, wall, ef = _u(rng, 24, 30), _u(rng, 7, 10), _u(rng, 0.2, 0.42)
        rv_t, span, rv_ef, length = _u(rng, 18, 28), _u(rng, 65, 85), _u(rng, 0.35, 0.55), _u(rng, 78, 96)
    elif group == "RV":
        r_endo, wall, ef = _u(rng, 19, 25), _u(rng, 6.5, 9), _u(rng, 0.5, 0.68)
        rv_t, span, rv_ef, length = _u(rng, 32, 48), _u(rng, 85, 105), _u(rng, 0.15, 0.35), _u(rng, 75, 92)
    else:  # NOR
        r_endo, wall, ef = _u(rng, 21, 26), _u(rng, 7, 10), _u(rng, 0.55, 0.7)
        rv_t, span, rv_ef, length = _u(rng, 20, 30), _u(rng, 70, 90), _u(rng, 0.45, 0.6), _u(rng, 75, 92)
    r_endo, wall, rv_t, length = r_endo * scale, wall * scale, rv_t * scale, length * scale

    # Longitudinal shortening takes part of the stroke volume; the rest is radial contraction:
    # ESV/EDV = (1 - EF) ~ c^2 (1 - long).
    longitudinal = 0.05 + 0.12 * ef
    contraction = float(np.clip(np.sqrt((1.0 - ef) / (1.0 - longitudinal)), 0.4, 0.98))
    tilt_angle, drift_angle = _u(rng, 0, 2 * np.pi), _u(rng, 0, 2 * np.pi)
    tilt, drift = _u(rng, 0.05, 0.35), _u(rng, 0.0, 0.2)
    infarct_start = _u(rng, 0.1, 0.5)
    pap_spread = _u(rng, 0.7, 1.1)
    heart = _Heart(
        group=group,
        cx=0.0,
        cy=0.0,
        phi=phi,
        length=length,
        length_endo=length - _u(rng, 0.6, 1.0) * wall - 2.0,
        length_rv=length * _u(rng, 0.7, 0.9),
        profile_q=_u(rng, 1.8, 3.0) + (0.8 if group == "DCM" else 0.0),
        r_endo=r_endo,
        wall=wall,
        tilt_x=tilt * float(np.cos(tilt_angle)),
        tilt_y=tilt * float(np.sin(tilt_angle)),
        drift_x=drift * float(np.cos(drift_angle)),
        drift_y=drift * float(np.sin(drift_angle)),
        ef=ef,
        contraction=contraction,
        shift=longitudinal * length,
        rv_thickness=rv_t,
        rv_bulge=_u(rng, 0.25, 0.45),
        rv_span=float(np.radians(span)),
        rv_contraction=1.0,  # calibrated below
        rv_wall=_u(rng, 2.0, 3.5),
        septal_flattening=_u(rng, 0.1, 0.25) if group == "RV" else 0.0,
        septal_hypertrophy=_u(rng, 0.15, 0.6) if group == "HCM" else 0.0,
        infarct_angle=_u(rng, np.pi / 4, 7 * np.pi / 4),
        infarct_halfwidth=_u(rng, np.radians(30), np.radians(55)),
        infarct_depth=(infarct_start, min(1.0, infarct_start + _u(rng, 0.35, 0.7))),
        infarct_thinning=_u(rng, 0.35, 0.6),
        papillary_angles=(np.pi - pap_spread + _u(rng, -0.2, 0.2), np.pi + pap_spread + _u(rng, -0.2, 0.2)),
        papillary_radius=_u(rng, 3.0, 5.5) * scale,
        fat_thickness=_u(rng, 2.0, 7.0),
        fat_offset=_u(rng, -0.3, 0.2),
        atrial_depth=_u(rng, 25, 40),
        endo_coef=_fourier_coefficients(rng, 0.05, 0.05),
        wall_coef=_fourier_coefficients(rng, 0.15, 0.1),
        contraction_coef=_fourier_coefficients(rng, 0.05, 0.03),
        rv_coef=_fourier_coefficients(rng, 0.1, 0.08),
        fat_coef=_fourier_coefficients(rng, 0.6, 0.3),
    )
    heart.rv_contraction = _rv_thickness_ratio(heart, (1.0 - rv_ef) / (1.0 - longitudinal))
    return heart


def _rv_thickness_ratio(heart: _Heart, area_ratio: float) -> float:
    """ES/ED RV crescent thickness ratio that gives the wanted ES/ED crescent area at mid-depth.

    The crescent area is not proportional to its thickness (the ellipse widens with it), and the
    LV epicardium it wraps shrinks at ES, so solve for the ratio by bisection on a 2D grid.
    Longitudinal shortening is accounted for by the caller in `area_ratio`.
    """
    t = 0.4
    endo = heart.r_endo * float(_profile(np.float32(t * heart.length / heart.length_endo), heart.profile_q))
    epi = (heart.r_endo + heart.wall) * float(_profile(np.float32(t), heart.profile_q))
    endo_es = heart.contraction * endo
    epi_es = float(np.sqrt(endo_es**2 + epi**2 - endo**2))
    thickness = heart.rv_thickness * float(_profile(np.float32(t * heart.length / heart.length_rv), 2.0)) - 1.5
    if thickness <= 0.5:
        return area_ratio
    half = 2.0 * epi + thickness
    axis = np.arange(-half, half, 0.5, dtype=np.float32)
    u, v = axis[:, None], np.abs(axis[None, :])
    r = np.sqrt(u * u + v * v)

    def area(r_epi: float, rv_thickness: float) -> int:
        rho, _ = _rv_ellipse(heart, u, v, r_epi, rv_thickness)
        return int(((rho < 1.0) & (r >= r_epi)).sum())

    target = area_ratio * area(epi, thickness)
    low, high = 0.0, 1.5
    for _ in range(18):
        mid = 0.5 * (low + high)
        if area(epi_es, mid * thickness) < target:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def _angle_basis(dx: np.ndarray, dy: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(cos n theta, sin n theta) for n = 1..N] with theta = atan2(dy, dx), by the angle-addition
    recurrence (no trigonometric calls)."""
    norm = np.maximum(np.sqrt(dx * dx + dy * dy), 1e-6)
    cos_1, sin_1 = dx / norm, dy / norm
    basis = [(cos_1, sin_1)]
    for _ in range(N_HARMONICS - 1):
        cos_n, sin_n = basis[-1]
        basis.append((cos_n * cos_1 - sin_n * sin_1, sin_n * cos_1 + cos_n * sin_1))
    return basis


def _harmonics(basis: list[tuple[np.ndarray, np.ndarray]], coef: np.ndarray, depth: np.ndarray | float) -> np.ndarray:
    """sum_n (a_n + a'_n t) cos(n theta) + (b_n + b'_n t) sin(n theta) for basis[n-1] = (cos, sin)."""
    at_base = np.zeros(basis[0][0].shape, dtype=np.float32)
    slope = np.zeros_like(at_base)
    for (cos_n, sin_n), (a0, a1, b0, b1) in zip(basis, coef.tolist()):
        at_base += a0 * cos_n
        at_base += b0 * sin_n
        slope += a1 * cos_n
        slope += b1 * sin_n
    return at_base + slope * depth


def _profile(t: np.ndarray, q: float) -> np.ndarray:
    """Base-to-apex radius profile: 1 at the base (t = 0), 0 at and beyond the apex (t = 1)."""
    return np.sqrt(1.0 - np.clip(t, 0.0, 1.0) ** q)


def _angular_window(cos_dtheta: np.ndarray, halfwidth: float) -> np.ndarray:
    """Smooth bump around dtheta = 0, about 1/e at +-halfwidth (no arccos needed)."""
    return np.exp(-(((1.0 - cos_dtheta) / (1.0 - float(np.cos(halfwidth)))) ** 2))


def _rv_ellipse(heart: _Heart, u: np.ndarray, v: np.ndarray, r_epi, thickness) -> tuple[np.ndarray, np.ndarray]:
    """Normalised radius (< 1 inside) of the RV ellipse, and its semi-axis `a` towards the RV.

    The ellipse's far tip lies `thickness` outside an epicardium of radius `r_epi` on the RV axis
    and it crosses that circle at +-rv_span, so the part outside the LV is a crescent. It flattens
    into the epicardial circle as the thickness goes to 0, so the crescent area grows about
    linearly with the thickness. The limits on `a` keep the ellipse's back inside the LV and the
    crossing angle solvable.
    """
    cos_span, sin_span = float(np.cos(heart.rv_span)), float(np.sin(heart.rv_span))
    lowest = 0.55 * (r_epi * (1.0 - cos_span) + thickness) + 1.0
    highest = r_epi + 0.45 * thickness + 1.0
    a = np.clip(r_epi + heart.rv_bulge * thickness, lowest, highest)
    a = np.maximum(a, 1.0)
    centre = r_epi + thickness - a
    x = np.clip((r_epi * cos_span - centre) / a, -0.95, 0.95)
    b = np.maximum(r_epi * sin_span / np.sqrt(1.0 - x * x), 1.0)
    return np.sqrt(((u - centre) / a) ** 2 + (v / b) ** 2), a


def _render_heart(
    heart: _Heart, phase: str, x: np.ndarray, y: np.ndarray, z: np.ndarray, jitter: np.ndarray, fine: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue codes (0 where the heart model has nothing) and labels of one phase on a grid.

    x (nx, 1, 1), y (1, ny, 1), z (1, 1, nzs) are scene millimetres (z: depth of the sub-slice below
    the base plane at the heart centre); jitter (nzs, 2) per sub-slice in-plane shift; fine: a
    fine-grained noise field on the grid, used for trabeculation.
    """
    h = heart
    es = phase == "ES"
    # Depth below the (tilted) base plane; at ES map to the ED material depth (the base descends).
    depth = z - (h.tilt_x * (x - h.cx) + h.tilt_y * (y - h.cy))
    if es:
        depth = (depth - h.shift) * (h.length / (h.length - h.shift))
    clipped = np.clip(depth, 0.0, h.length)
    xh = x - (h.cx + jitter[:, 0] + h.drift_x * clipped)
    yh = y - (h.cy + jitter[:, 1] + h.drift_y * clipped)
    cphi, sphi = float(np.cos(h.phi)), float(np.sin(h.phi))
    u = cphi * xh + sphi * yh  # towards the RV
    v = -sphi * xh + cphi * yh
    r = np.sqrt(u * u + v * v)
    basis = _angle_basis(u, v)
    cos_theta, sin_theta = basis[0]

    t = depth / h.length
    t_endo = depth / h.length_endo
    tc = np.clip(t, 0.0, 1.0)
    ventricle = depth >= 0.0

    # LV cavity and epicardium at ED.
    base_radius = h.r_endo * np.clip(1.0 + _harmonics(basis, h.endo_coef, tc), 0.7, 1.4)
    if h.septal_flattening:
        base_radius *= 1.0 - h.septal_flattening * _angular_window(cos_theta, np.radians(40))
    wall = h.wall * np.clip(1.0 + _harmonics(basis, h.wall_coef, tc), 0.5, 1.6)
    if h.septal_hypertrophy:
        wall *= 1.0 + h.septal_hypertrophy * _angular_window(cos_theta, np.radians(60))
    infarct = None
    if h.group == "MINF":
        cos_d = cos_theta * float(np.cos(h.infarct_angle)) + sin_theta * float(np.sin(h.infarct_angle))
        t0, t1 = h.infarct_depth
        in_depth = np.clip(np.minimum(tc - t0, t1 - tc) / 0.08 + 0.5, 0.0, 1.0)
        infarct = _angular_window(cos_d, h.infarct_halfwidth) * in_depth
        wall *= 1.0 - (1.0 - h.infarct_thinning) * infarct
    r_endo = base_radius * _profile(t_endo, h.profile_q)
    r_epi = (base_radius + wall) * _profile(t, h.profile_q)
    nominal_endo = h.r_endo * _profile(t_endo, h.profile_q)  # unperturbed, for the papillary muscles

    if es:
        # Radial contraction, none in the akinetic infarct; keep the local myocardial area.
        c = h.contraction * (1.0 + _harmonics(basis, h.contraction_coef, tc))
        if infarct is not None:
            c = c + (1.02 - c) * infarct
        r_endo_es = c * r_endo
        r_epi = np.sqrt(r_endo_es**2 + r_epi**2 - r_endo**2)
        r_endo = r_endo_es
        nominal_endo = h.contraction * nominal_endo

    lv = ventricle & (r < r_endo)
    epi = ventricle & (r < r_epi)
    myo = epi & ~lv

    # Papillary muscles: dark blobs against the free wall, inside the LV label (ACDC convention).
    pap_window = np.clip(np.minimum(tc - 0.15, 0.75 - tc) / 0.08 + 0.5, 0.0, 1.0)
    pap_radius = h.papillary_radius * (1.15 if es else 1.0) * pap_window
    pap_centre = np.maximum(nominal_endo - 0.8 * pap_radius, 0.0)
    papillary = np.zeros_like(lv)
    for angle in h.papillary_angles:
        du = u - pap_centre * float(np.cos(angle))
        dv = v - pap_centre * float(np.sin(angle))
        papillary |= du * du + dv * dv < pap_radius * pap_radius
    papillary &= lv

    # RV: an ellipse pressed against the septal epicardium, minus the LV -> a crescent.
    rv_thickness = h.rv_thickness * _profile(depth / h.length_rv, 2.0) - 1.5
    if es:  # the free wall moves towards the septum; the crescent keeps its angular span
        rv_thickness = rv_thickness * h.rv_contraction
    rv_thickness = rv_thickness * np.clip(1.0 + _harmonics(basis, h.rv_coef, tc), 0.5, 1.6)
    # Anchored to the local epicardial radius, so a thick (HCM) septum pushes the RV out.
    rho, a = _rv_ellipse(h, u, v, r_epi, rv_thickness)
    rv = ventricle & ~epi & (rv_thickness > 0) & (rho < 1.0)
    rv_wall = ventricle & ~epi & ~rv & (rv_thickness > -h.rv_wall) & (rho < 1.0 + h.rv_wall / a)

    # Trabeculation: dark texture near the RV free wall and along the LV endocardium.
    trabecula = (rv & (fine > 1.0) & (rho > 0.65)) | (lv & ~papillary & (fine > 1.3) & (r > 0.8 * r_endo))

    # Epicardial fat: a patchy bright band outside the myocardium.
    fat_band = h.fat_thickness * np.clip(_harmonics(basis, h.fat_coef, tc) + h.fat_offset, 0.0, None)
    epi_fat = ventricle & (t < 0.95) & ~epi & ~rv & ~rv_wall & (r < r_epi + fat_band)

    # Atria above the base plane (background label, blood-bright): the partial basal slice.
    above = (depth < 0.0) & (depth > -h.atrial_depth)
    atrium_radius = 0.85 * base_radius
    la = above & (r < atrium_radius)
    la_wall = above & ~la & (r < atrium_radius + 2.5)
    rho0, a0 = _rv_ellipse(h, u, v, h.r_endo + h.wall, h.rv_thickness * (1.0 + _harmonics(basis, h.rv_coef, 0.0)))
    ra = above & ~la & ~la_wall & (rho0 < 0.95)
    ra_wall = above & ~la & ~la_wall & ~ra & (rho0 < 0.95 + 2.5 / a0)

    tissue = np.zeros(r.shape, dtype=np.int8)
    for mask, code in (
        (epi_fat, EPI_FAT),
        (la_wall | ra_wall, ATRIAL_WALL),
        (la | ra, ATRIAL_BLOOD),
        (rv_wall, RV_WALL),
        (myo, MYO),
        (lv, LV_BLOOD),
        (rv, RV_BLOOD),
        (papillary, PAPILLARY),
        (trabecula, TRABECULA),
    ):
        tissue[mask] = code
    labels = np.zeros(r.shape, dtype=np.uint8)
    labels[rv] = LABEL_RV
    labels[myo] = LABEL_MYO
    labels[lv] = LABEL_LV
    return tissue, labels


def _perturbed_ellipse(
    p: np.ndarray, q: np.ndarray, centre: tuple[float, float], axes: tuple[float, float], coef: np.ndarray
) -> np.ndarray:
    """Inside of an ellipse whose outline is smoothly perturbed with angle (2D boolean mask)."""
    dp, dq = (p - centre[0]) / axes[0], (q - centre[1]) / axes[1]
    radius = np.sqrt(dp * dp + dq * dq)
    return radius < 1.0 + _harmonics(_angle_basis(dp, dq), coef, 0.0)


def _render_body(body: _Body, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Tissue codes of the surroundings on the (nx, ny, nzs) grid; x (nx, 1), y (1, ny), z (1, 1, nzs)."""
    c, s = float(np.cos(body.rot)), float(np.sin(body.rot))
    p = c * (x - body.bx) + s * (y - body.by)  # patient left
    q = -s * (x - body.bx) + c * (y - body.by)  # anterior
    a, b = body.half_width, body.half_depth
    k = body.squareness
    outline = (np.abs(p / a) ** k + np.abs(q / b) ** k) ** (1.0 / k)

    def ellipse(pc: float, qc: float, pa: float, qa: float) -> np.ndarray:
        return ((p - pc) / pa) ** 2 + ((q - qc) / qa) ** 2 < 1.0

    # z-invariant tissues in two layers: `low` (lungs may be covered by the liver), `high` (on top).
    inside = outline < 1.0
    fat = inside & (outline > 1.0 - body.fat / (0.5 * (a + b)))
    interior = inside & ~fat
    low = np.where(inside, SOFT, AIR).astype(np.int8)
    low[fat] = FAT
    for pc, qc, pa, qa in body.fat_blobs.tolist():
        low[interior & ellipse(pc, qc, pa, qa)] = FAT
    for coef, (pc, pa, qa) in zip(body.lung_coef, ((0.55, 0.33, 0.62), (-0.47, 0.36, 0.64))):
        low[interior & _perturbed_ellipse(p, q, (pc * a, 0.02 * b), (pa * a, qa * b), coef)] = LUNG

    high = np.zeros(low.shape, dtype=np.int8)
    rib_radius = 1.0 - 0.5 * body.fat / (0.5 * (a + b))
    for angle in body.rib_angles.tolist():
        high[ellipse(rib_radius * a * float(np.cos(angle)), rib_radius * b * float(np.sin(angle)), 6.0, 4.5)] = BONE
    spine_q = -0.62 * b
    high[ellipse(0.0, spine_q, body.spine_radius, body.spine_radius * 0.85)] = BONE
    high[ellipse(0.0, spine_q - body.spine_radius - 8.0, 6.0, 5.0)] = CSF
    aorta_p = body.spine_radius + body.aorta_radius * 0.6
    high[ellipse(aorta_p, spine_q + body.spine_radius, body.aorta_radius, body.aorta_radius)] = AORTA

    # Liver (right) and stomach (left) rise under the diaphragm in the lower, apical slices:
    # each pixel appears from a depth that grows with its distance from the organ centre.
    presence = np.clip((z[0, 0] - body.liver_start) / body.liver_ramp, 0.0, 1.0)
    dp, dq = (p + 0.25 * a) / (0.55 * a), (q + 0.05 * b) / (0.7 * b)
    liver_r2 = (dp * dp + dq * dq) / (1.0 + _harmonics(_angle_basis(dp, dq), body.liver_coef, 0.0)) ** 2
    sp, sq = (p - 0.4 * a) / (0.2 * a), (q + 0.15 * b) / (0.28 * b)
    stomach_r2 = sp * sp + sq * sq
    tissue = np.repeat(low[..., None], z.shape[-1], axis=2)
    interior3 = interior[..., None]
    tissue[(liver_r2[..., None] < presence[None, None, :]) & interior3] = LIVER
    tissue[(stomach_r2[..., None] < presence[None, None, :] - 0.3) & interior3] = STOMACH
    high3 = np.broadcast_to(high[..., None], tissue.shape)
    np.copyto(tissue, high3, where=high3 > 0)
    return tissue
