"""Acquisition of the phantom: a patient's scan (geometry, tissue intensities, image formation) and the
vendor-like styles A-D, which change only the acquisition.

* Image formation: per-patient tissue intensities and contrast, smooth texture, through-plane
  partial volume (three sub-slices averaged over the slice thickness), in-plane blur, a smooth
  multiplicative bias field, per-slice gain, per-patient gain and Rician noise, int16.
* Geometry: in-plane spacing 1.2-1.8 mm, 5-10 mm between slices, 6-12 slices, matrices 150-256 per
  axis, heart at a random position / rotation / size, small per-slice breath-hold shifts. Affines
  are non-trivial: non-zero origins, some oblique (a rotation), some with flipped axes (the array is
  flipped and the affine column negated, so world coordinates of the anatomy are unchanged).

The image-formation and geometry numbers above are those of style A (the default).

Labels are taken at each slice's centre, the image integrates over the slice thickness, so the two
agree up to partial volume as in real data.

Styles: vendor / scanner / site domain shifts
---------------------------------------------
`style` ("A".."D", CLI `--style`) changes only the acquisition, so that adaptation (say labeled
style A, unlabeled style C) can be tried without real data. The anatomy -- group, heart shape,
sizes, pathology, motion, ED/ES frames, height, weight, heart and body pose, affine orientation and
flips -- is drawn from the same stream in every style, so a patient's Info.cfg is identical across
styles and its label maps describe the same heart (LV volume in mm^3 typically within ~5% at ED,
~10-15% at ES with the 10-12 mm slices of C, from where the slices fall). A style other than A
redraws its acquisition from a stream of its own; the heart keeps its relative place in the new
field of view and the stack keeps style A's first-slice depth and extent in mm.

==========================  ==============  ===============  ===============  ===============
(uniform ranges)            A (default)     B                C                D
==========================  ==============  ===============  ===============  ===============
looks like                  ACDC, 1.5/3 T   3 T, 12-bit      old 1.5 T,       interpolated
                                            export           8-bit export     recon, rescaled
in-plane spacing (mm)       1.2-1.8         0.9-1.2          1.6-2.2          0.65-0.9
field of view x (mm)        260-380         280-360          280-360          260-330
matrix per axis             150-256         240-320          128-192          288-384
slice spacing (mm)          5-10 (mostly    6-8              10-12            8-10
                            near 10)
slice thickness / spacing   0.75-1.0        0.95-1.0         0.7-0.9 (gap)    0.6-0.8 (gap)
slices                      6-12            6-18             5-12             6-14
blood value (gain)          150-900         1800-2800        120-170          6000-15000
stored range (int16)        0-32767         0-4095 clipped   0-255 clipped    0-32767
myocardium / blood          0.2-0.36        0.14-0.24        0.5-0.62         0.25-0.35
fat / blood                 0.7-1.0         0.55-0.8         1.0-1.25         0.35-0.55
contrast stretch            0.7-1.1         0.95-1.15        0.85-1.0         1.0-1.2
other tissues               --              lung 0.02-0.06   soft 0.45-0.6,   liver 0.22-0.35
                                                             liver 0.5-0.65,
                                                             lung 0.08-0.16
noise sigma / blood         0.015-0.06      0.005-0.015      0.07-0.12        0.02-0.04
noise correlation (voxels)  0 (white)       0                0                1.0-1.5
bias field (x A's)          1               2.5              1                0.5
in-plane blur (voxels)      0.5-0.9         0.4-0.7          0.9-1.3          1.3-2.0
texture amplitude           0.04-0.1        0.03-0.07        0.06-0.12        0.04-0.08
per-slice gain sd           0.03            0.02             0.06             0.03
--------------------------  --------------  ---------------  ---------------  ---------------
measured, seed 0, 10 pat.:
LV blood / myo, mid slice   1.9-4.1         3.1-6.2          1.3-1.6          2.2-3.6
background noise / blood    0.02-0.07       0.006-0.02       0.08-0.13        0.025-0.055
99th percentile             ~200-850        ~1900-3600       ~160-240         ~5300-16000
==========================  ==============  ===============  ===============  ===============

(Tissue intensities are relative to blood = 1 before the contrast stretch, which maps every
tissue t to 0.5 + stretch * (t - 0.5).) Style A is the original phantom, byte for byte: its
headers' descrip field is the bare phantom marker; the other styles append " style B" etc., which
`phantom_style(path)` reads back (files before styles existed read as A).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from maskmatch_med.data.phantom.anatomy import (
    AORTA, ATRIAL_BLOOD, ATRIAL_WALL, BONE, CSF, EPI_FAT, FAT, GROUPS, LIVER, LUNG, LV_BLOOD, MYO, N_TISSUES, PAPILLARY, RV_BLOOD,
    RV_WALL, SOFT, STOMACH, TRABECULA, _Body, _fourier_coefficients, _Heart, _render_body, _render_heart, _sample_heart, _u,
)

SUB_SLICES = 3  # sub-slices averaged across the slice thickness (through-plane partial volume)
_BIAS_SCALE = np.array([0.25, 0.25, 0.15, 0.15, 0.1, 0.08, 0.05])  # style A's bias-field coefficient sds


@dataclass
class _Patient:
    """Everything needed to render and write one patient."""

    patient_id: str
    group: str
    ed_frame: int
    es_frame: int
    n_frames: int
    height: float
    weight: float
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    slice_thickness: float
    z_first: float  # depth of the first slice centre below the base plane
    slice_jitter: np.ndarray  # (nz, 2) breath-hold in-plane shifts of the heart, mm
    heart: _Heart
    body: _Body
    intensities: np.ndarray  # (N_TISSUES,) relative intensity per tissue code (blood ~ 1)
    texture_amplitude: float
    blur_sigma: float  # in-plane Gaussian blur, voxels
    bias_coef: np.ndarray
    slice_gain: np.ndarray  # (nz,)
    gain: float
    noise: float  # Rician noise sigma relative to gain
    rotation: np.ndarray  # 3x3 direction matrix of the affine before flips
    origin: np.ndarray
    flips: tuple[bool, bool, bool]
    placement: tuple[float, float] = (0.0, 0.0)  # raw draws in [-1, 1] that placed the heart in the FOV
    style: str = "A"
    max_value: int = int(np.iinfo(np.int16).max)  # intensities are clipped to [0, max_value]
    noise_correlation: float = 0.0  # in-plane Gaussian smoothing of the noise (voxels), 0: white
    texture_scale: tuple[float, float] = (1.5, 1.2)  # smoothing of the texture / trabeculation fields (voxels)


def _random_rotation(rng: np.random.Generator, angle: float) -> np.ndarray:
    """Rotation by `angle` about a random axis (Rodrigues' formula)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


# Relative tissue intensity ranges (blood ~ 1) of style A; other styles override some of them.
# Keys in draw order: the order of the uniform draws below is part of the reproducibility contract.
_TISSUE_RANGES_A: dict[str, tuple[float, float]] = {
    "myo": (0.2, 0.36),
    "fat": (0.7, 1.0),
    "soft": (0.26, 0.42),
    "lung": (0.03, 0.1),
    "liver": (0.3, 0.5),
    "bone": (0.35, 0.55),
    "csf": (0.75, 1.0),
    "aorta": (0.85, 1.1),
    "stomach": (0.45, 0.9),
    "atrial_blood": (0.85, 1.05),
    "atrial_wall": (0.9, 1.2),  # times myo
    "epi_fat": (0.85, 1.05),  # times fat
    "rv_wall": (0.9, 1.3),  # times myo
    "rv_blood": (0.8, 1.05),
    "papillary": (1.0, 1.4),  # times myo
    "trabecula": (0.4, 0.65),
    "contrast": (0.7, 1.1),  # pulls all tissues towards (< 1) or away from (> 1) mid-grey
}


def _intensity_table(rng: np.random.Generator, overrides: dict[str, tuple[float, float]] | None = None) -> np.ndarray:
    """Relative bSSFP-like intensities per tissue code (blood ~ 1), jittered per patient."""
    r = {**_TISSUE_RANGES_A, **(overrides or {})}
    myo = _u(rng, *r["myo"])
    fat = _u(rng, *r["fat"])
    table = np.zeros(N_TISSUES)
    table[SOFT] = _u(rng, *r["soft"])
    table[FAT] = fat
    table[LUNG] = _u(rng, *r["lung"])
    table[LIVER] = _u(rng, *r["liver"])
    table[BONE] = _u(rng, *r["bone"])
    table[CSF] = _u(rng, *r["csf"])
    table[AORTA] = _u(rng, *r["aorta"])
    table[STOMACH] = _u(rng, *r["stomach"])
    table[ATRIAL_BLOOD] = _u(rng, *r["atrial_blood"])
    table[ATRIAL_WALL] = myo * _u(rng, *r["atrial_wall"])
    table[EPI_FAT] = fat * _u(rng, *r["epi_fat"])
    table[RV_WALL] = myo * _u(rng, *r["rv_wall"])
    table[MYO] = myo
    table[LV_BLOOD] = 1.0
    table[RV_BLOOD] = _u(rng, *r["rv_blood"])
    table[PAPILLARY] = myo * _u(rng, *r["papillary"])
    table[TRABECULA] = _u(rng, *r["trabecula"])
    # Contrast between tissues varies per patient: pull all (but air) towards or away from mid-grey.
    contrast = _u(rng, *r["contrast"])
    table[1:] = np.clip(0.5 + contrast * (table[1:] - 0.5), 0.02, None)
    return table


def _sample_patient(patient_index: int, rng: np.random.Generator) -> _Patient:
    """All scalar random choices for one patient (geometry, anatomy, intensities, affine)."""
    group = GROUPS[int(rng.integers(len(GROUPS)))]

    # Acquisition geometry.
    sx = _u(rng, 1.2, 1.8)
    fov = _u(rng, 260, 380)
    nx = int(np.clip(round(fov / sx), 150, 256))
    ny = int(np.clip(round(nx * _u(rng, 0.75, 1.15)), 150, 256))
    dz = 5.0 + 5.0 * float(np.sqrt(rng.random()))  # 5-10 mm, mostly towards 10 as in ACDC

    # Body orientation in the scene; the RV lies anterior-right of the LV (135 degrees in the body frame).
    body_rot = _u(rng, -np.radians(45), np.radians(45))
    rv_direction = body_rot + float(np.radians(135)) + _u(rng, -np.radians(20), np.radians(20))
    heart = _sample_heart(rng, group, rv_direction)
    # Base to (near) apex, sometimes short of it; 6-12 slices.
    nz = int(np.clip(round(heart.length * _u(rng, 0.7, 1.1) / dz) + 1, 6, 12))

    # Heart position: anywhere that keeps it (and its breath-hold shifts) inside the field of view.
    half_x, half_y = (nx - 1) * sx / 2, (ny - 1) * sx / 2
    reach = heart.extent() + 10.0
    placement = (_u(rng, -1, 1), _u(rng, -1, 1))  # where in the free part of the field of view
    heart.cx = placement[0] * max(0.0, half_x - reach) * 0.8
    heart.cy = placement[1] * max(0.0, half_y - reach) * 0.8

    half_width, half_depth = _u(rng, 140, 185), _u(rng, 95, 130)
    p_heart, q_heart = _u(rng, 0.05, 0.25) * half_width, _u(rng, 0.2, 0.4) * half_depth
    c, s = float(np.cos(body_rot)), float(np.sin(body_rot))
    n_blobs = int(rng.integers(2, 6))  # mediastinal fat around the heart
    body = _Body(
        bx=heart.cx - (c * p_heart - s * q_heart),
        by=heart.cy - (s * p_heart + c * q_heart),
        rot=body_rot,
        half_width=half_width,
        half_depth=half_depth,
        squareness=_u(rng, 2.0, 2.8),
        fat=_u(rng, 5, 18),
        liver_start=heart.length * _u(rng, 0.3, 0.7),
        liver_ramp=_u(rng, 10, 30),
        spine_radius=_u(rng, 13, 18),
        aorta_radius=_u(rng, 9, 14),
        lung_coef=np.stack([_fourier_coefficients(rng, 0.08, 0.0) for _ in range(2)]),
        liver_coef=_fourier_coefficients(rng, 0.06, 0.0),
        rib_angles=rng.uniform(np.radians(-30), np.radians(210), size=int(rng.integers(5, 10))),
        fat_blobs=np.column_stack(
            [
                p_heart + rng.normal(0.0, 35.0, size=n_blobs),
                q_heart + rng.normal(0.0, 35.0, size=n_blobs),
                rng.uniform(5, 14, size=n_blobs),
                rng.uniform(5, 14, size=n_blobs),
            ]
        ),
    )

    oblique = rng.random() < 0.6
    rotation = _random_rotation(rng, _u(rng, np.radians(10), np.radians(60))) if oblique else np.eye(3)
    flips = (bool(rng.random() < 0.3), bool(rng.random() < 0.3), bool(rng.random() < 0.15))
    n_frames = int(rng.integers(25, 36))
    patient = _Patient(
        patient_id=f"patient{patient_index:03d}",
        group=group,
        ed_frame=1 if rng.random() < 0.9 else int(rng.integers(2, 4)),
        es_frame=int(rng.integers(8, 16)),
        n_frames=n_frames,
        height=round(_u(rng, 150, 195), 1),
        weight=round(_u(rng, 45, 120), 1),
        shape=(nx, ny, nz),
        spacing=(sx, sx, dz),
        slice_thickness=dz * _u(rng, 0.75, 1.0),
        z_first=dz * _u(rng, -0.5, 0.3),
        slice_jitter=rng.normal(0.0, 1.5, size=(nz, 2)),
        heart=heart,
        body=body,
        intensities=_intensity_table(rng),
        texture_amplitude=_u(rng, 0.04, 0.1),
        blur_sigma=_u(rng, 0.5, 0.9),
        bias_coef=rng.normal(0.0, 1.0, size=7) * _BIAS_SCALE,
        slice_gain=1.0 + rng.normal(0.0, 0.03, size=nz),
        gain=_u(rng, 150, 900),
        noise=_u(rng, 0.015, 0.06),
        rotation=rotation,
        origin=rng.uniform(-200, 200, size=3),
        flips=flips,
        placement=placement,
    )
    return patient


@dataclass(frozen=True)
class _Style:
    """Acquisition / image-formation ranges of one vendor-like style (not used for style A, which
    keeps its original sampling in `_sample_patient`; the numbers in the module docstring for A
    are that code's ranges). Uniform draws unless noted."""

    spacing: tuple[float, float]  # in-plane voxel size, mm
    fov: tuple[float, float]  # field of view along x, mm (y: 0.75-1.15 times x, as in A)
    matrix: tuple[int, int]  # clip range of both in-plane matrix sizes
    slice_spacing: tuple[float, float]  # mm between slice centres
    thickness: tuple[float, float]  # slice thickness as a fraction of the spacing (< 1: a gap)
    slices: tuple[int, int]  # clip range of the slice count
    gain: tuple[float, float]  # scanner units of blood (tissue intensity 1)
    max_value: int  # values are clipped to [0, max_value] (the stored range), int16 on disk
    noise: tuple[float, float]  # Rician sigma relative to blood
    noise_correlation: tuple[float, float]  # in-plane smoothing of the noise, voxels (0: white)
    bias: float  # scale of the bias-field coefficients relative to style A
    blur: tuple[float, float]  # in-plane Gaussian blur, voxels
    texture: tuple[float, float]  # tissue texture amplitude
    slice_gain: float  # sd of the per-slice gain
    tissues: dict  # overrides of _TISSUE_RANGES_A


STYLES = ("A", "B", "C", "D")


_STYLE_SPECS: dict[str, _Style] = {
    # B: 3 T, 12-bit: finer voxels, thin contiguous slices, high contrast, low noise, strong bias.
    "B": _Style(
        spacing=(0.9, 1.2),
        fov=(280.0, 360.0),
        matrix=(240, 320),
        slice_spacing=(6.0, 8.0),
        thickness=(0.95, 1.0),
        slices=(6, 18),
        gain=(1800.0, 2800.0),
        max_value=4095,
        noise=(0.005, 0.015),
        noise_correlation=(0.0, 0.0),
        bias=2.5,
        blur=(0.4, 0.7),
        texture=(0.03, 0.07),
        slice_gain=0.02,
        tissues={"myo": (0.14, 0.24), "fat": (0.55, 0.8), "lung": (0.02, 0.06), "contrast": (0.95, 1.15)},
    ),
    # C: older 1.5 T, 8-bit export: coarse voxels, thick slices with a gap, weak blood-myocardium
    # contrast, bright fat, noisy, blurry.
    "C": _Style(
        spacing=(1.6, 2.2),
        fov=(280.0, 360.0),
        matrix=(128, 192),
        slice_spacing=(10.0, 12.0),
        thickness=(0.7, 0.9),
        slices=(5, 12),
        gain=(120.0, 170.0),
        max_value=255,
        noise=(0.07, 0.12),
        noise_correlation=(0.0, 0.0),
        bias=1.0,
        blur=(0.9, 1.3),
        texture=(0.06, 0.12),
        slice_gain=0.06,
        tissues={
            "myo": (0.5, 0.62),
            "fat": (1.0, 1.25),
            "soft": (0.45, 0.6),
            "lung": (0.08, 0.16),
            "liver": (0.5, 0.65),
            "trabecula": (0.6, 0.8),
            "papillary": (1.0, 1.2),
            "contrast": (0.85, 1.0),
        },
    ),
    # D: interpolated (zero-filled) reconstruction with a large rescale slope: very fine nominal
    # voxels but blurred, correlated noise, thick slices with a large gap, dark fat, weak bias.
    "D": _Style(
        spacing=(0.65, 0.9),
        fov=(260.0, 330.0),
        matrix=(288, 384),
        slice_spacing=(8.0, 10.0),
        thickness=(0.6, 0.8),
        slices=(6, 14),
        gain=(6000.0, 15000.0),
        max_value=int(np.iinfo(np.int16).max),
        noise=(0.02, 0.04),
        noise_correlation=(1.0, 1.5),
        bias=0.5,
        blur=(1.3, 2.0),
        texture=(0.04, 0.08),
        slice_gain=0.03,
        tissues={"fat": (0.35, 0.55), "myo": (0.25, 0.35), "liver": (0.22, 0.35), "contrast": (1.0, 1.2)},
    ),
}


def _restyle(patient: _Patient, style: str, rng: np.random.Generator) -> _Patient:
    """The same patient (anatomy, pose, Info.cfg, affine orientation) acquired in another style.

    Only acquisition and image-formation parameters are redrawn, from `rng` (a stream of its own
    per style). The heart keeps its raw placement draws, rescaled to the new field of view (a pure
    translation of heart and body together), and the stack keeps style A's first-slice depth and
    extent in millimetres (the same planning; the slice count follows the slice spacing).
    """
    spec = _STYLE_SPECS[style]
    sx = _u(rng, *spec.spacing)
    fov = _u(rng, *spec.fov)
    nx = int(np.clip(round(fov / sx), *spec.matrix))
    ny = int(np.clip(round(nx * _u(rng, 0.75, 1.15)), *spec.matrix))
    dz = _u(rng, *spec.slice_spacing)
    heart, body = patient.heart, patient.body
    extent = (patient.shape[2] - 1) * patient.spacing[2]  # style A's stack, first to last slice centre
    nz = int(np.clip(round(extent / dz) + 1, *spec.slices))

    half_x, half_y = (nx - 1) * sx / 2, (ny - 1) * sx / 2
    reach = heart.extent() + 10.0
    cx = patient.placement[0] * max(0.0, half_x - reach) * 0.8
    cy = patient.placement[1] * max(0.0, half_y - reach) * 0.8
    body = replace(body, bx=body.bx + (cx - heart.cx), by=body.by + (cy - heart.cy))
    heart = replace(heart, cx=cx, cy=cy)

    return replace(
        patient,
        shape=(nx, ny, nz),
        spacing=(sx, sx, dz),
        slice_thickness=dz * _u(rng, *spec.thickness),
        slice_jitter=rng.normal(0.0, 1.5, size=(nz, 2)),
        heart=heart,
        body=body,
        intensities=_intensity_table(rng, spec.tissues),
        texture_amplitude=_u(rng, *spec.texture),
        blur_sigma=_u(rng, *spec.blur),
        bias_coef=rng.normal(0.0, 1.0, size=7) * _BIAS_SCALE * spec.bias,
        slice_gain=1.0 + rng.normal(0.0, spec.slice_gain, size=nz),
        gain=_u(rng, *spec.gain),
        noise=_u(rng, *spec.noise),
        style=style,
        max_value=spec.max_value,
        noise_correlation=_u(rng, *spec.noise_correlation),
        texture_scale=(2.2 / sx, 1.8 / sx),  # the same physical scale (mm) whatever the voxel size
    )


def _heart_window(patient: _Patient, grid_x: np.ndarray, grid_y: np.ndarray, margin: float) -> tuple[slice, slice]:
    """In-plane index window that contains all heart tissue (the heart is rendered only there)."""
    reach = patient.heart.extent() + margin + 3.0 * 1.5 + 2.0  # + breath-hold jitter (3 sd) + a voxel
    wx = np.nonzero(np.abs(grid_x - patient.heart.cx) <= reach)[0]
    wy = np.nonzero(np.abs(grid_y - patient.heart.cy) <= reach)[0]
    return slice(int(wx[0]), int(wx[-1]) + 1), slice(int(wy[0]), int(wy[-1]) + 1)


def _render_phase(
    patient: _Patient, phase: str, texture: np.ndarray, fine: np.ndarray, noise_rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """int16 image and uint8 labels of one phase, canonical (unflipped) orientation."""
    nx, ny, nz = patient.shape
    sx, sy, dz = patient.spacing
    grid_x = ((np.arange(nx) - (nx - 1) / 2) * sx).astype(np.float32)
    grid_y = ((np.arange(ny) - (ny - 1) / 2) * sy).astype(np.float32)
    offsets = (np.arange(SUB_SLICES) - (SUB_SLICES - 1) / 2) * (patient.slice_thickness / SUB_SLICES)
    z_sub = (patient.z_first + dz * np.arange(nz)[:, None] + offsets[None, :]).ravel().astype(np.float32)
    jitter = np.repeat(patient.slice_jitter, SUB_SLICES, axis=0).astype(np.float32)
    x3, y3, z3 = grid_x[:, None, None], grid_y[None, :, None], z_sub[None, None, :]

    tissue = _render_body(patient.body, grid_x[:, None], grid_y[None, :], z3)

    # The heart only on a window around it; widen the window if anything touches its edge.
    margin = 0.0
    while True:
        wx, wy = _heart_window(patient, grid_x, grid_y, margin)
        heart_tissue, heart_labels = _render_heart(
            patient.heart, phase, x3[wx], y3[:, wy], z3, jitter, np.repeat(fine[wx, wy], SUB_SLICES, axis=2)
        )
        edges = []  # window edges that are not image edges
        if wx.start > 0:
            edges.append(heart_tissue[0])
        if wx.stop < nx:
            edges.append(heart_tissue[-1])
        if wy.start > 0:
            edges.append(heart_tissue[:, 0])
        if wy.stop < ny:
            edges.append(heart_tissue[:, -1])
        if not any(edge.any() for edge in edges):
            break
        margin += 30.0
    window = tissue[wx, wy]
    np.copyto(window, heart_tissue, where=heart_tissue > 0)
    labels = np.zeros((nx, ny, nz), dtype=np.uint8)
    labels[wx, wy] = heart_labels[..., SUB_SLICES // 2 :: SUB_SLICES]  # labels at the slice centre

    # Image formation: intensities with texture, averaged across the slice thickness, blurred.
    intensity = patient.intensities.astype(np.float32)[tissue]
    intensity *= 1.0 + patient.texture_amplitude * np.repeat(texture, SUB_SLICES, axis=2)
    image = intensity.reshape(nx, ny, nz, SUB_SLICES).mean(axis=3)
    image = ndimage.gaussian_filter(image, sigma=(patient.blur_sigma, patient.blur_sigma, 0.0))

    # Smooth multiplicative bias field (coil sensitivity), per-slice gain, overall gain.
    gx = (grid_x / (nx * sx / 2))[:, None, None]
    gy = (grid_y / (ny * sy / 2))[None, :, None]
    gz = np.linspace(-1.0, 1.0, nz, dtype=np.float32)[None, None, :]
    c = patient.bias_coef.tolist()
    bias = np.exp(c[0] * gx + c[1] * gy + c[2] * gx * gx + c[3] * gy * gy + c[4] * gx * gy + c[5] * gz + c[6] * gz * gz)
    image = image * bias * patient.slice_gain.astype(np.float32)[None, None, :] * patient.gain

    # Rician noise: magnitude of the complex signal with Gaussian noise in both channels.
    sigma = patient.noise * patient.gain
    if patient.noise_correlation > 0.0:
        # Interpolated reconstruction: spatially correlated noise with the same per-voxel sigma.
        real = image + sigma * _smooth_noise(noise_rng, image.shape, (patient.noise_correlation,) * 2 + (0.0,))
        imag = sigma * _smooth_noise(noise_rng, image.shape, (patient.noise_correlation,) * 2 + (0.0,))
    else:
        real = image + noise_rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
        imag = noise_rng.normal(0.0, sigma, size=image.shape).astype(np.float32)
    image = np.sqrt(real * real + imag * imag)
    return np.clip(np.rint(image), 0, patient.max_value).astype(np.int16), labels


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...]) -> np.ndarray:
    """Gaussian-filtered white noise rescaled to unit standard deviation (float32)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=sigma)
    return field / max(float(field.std()), 1e-6)
