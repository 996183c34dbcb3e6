"""A synthetic cardiac cine-MRI phantom written in the real ACDC on-disk layout.

`write_acdc_phantom(out_dir, patients, seed, style)` writes `patientNNN/` directories that the ACDC reader
(`maskmatch_med.data.acdc`) reads exactly like the real data set:

    patientNNN/Info.cfg                      ED, ES, Group, Height, NbFrame, Weight
    patientNNN/patientNNN_frameXX.nii.gz     int16 short-axis stack, (X, Y, Z), Z = slice axis
    patientNNN/patientNNN_frameXX_gt.nii.gz  uint8 labels: 0 background, 1 RV, 2 myocardium, 3 LV

(ACDC also ships a 4D cine file per patient; the training code never reads it, so it is not written.)

How a frame is made
-------------------
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

Reproducibility: patient k is generated from `numpy.random.SeedSequence([seed, k])` alone (and
the style), so its files are identical for the same seed and style whatever the number of
patients; the NIfTI files are gzipped with a zero timestamp, so they are byte-identical too.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from maskmatch_med.errors import UserError

GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")

# Tissue codes of the intermediate tissue map (index into the per-patient intensity table).
AIR, SOFT, FAT, LUNG, LIVER, BONE, CSF, AORTA, STOMACH = range(9)
ATRIAL_BLOOD, ATRIAL_WALL, EPI_FAT, RV_WALL, MYO, LV_BLOOD, RV_BLOOD, PAPILLARY, TRABECULA = range(9, 18)
N_TISSUES = 18

# Label values, as in ACDC.
LABEL_RV, LABEL_MYO, LABEL_LV = 1, 2, 3

# Written into every NIfTI header's descrip field; marks files this module may overwrite.
PHANTOM_MARKER = b"maskmatch-med synthetic ACDC phantom"

N_HARMONICS = 4  # angular Fourier orders used for smooth shape perturbations
SUB_SLICES = 3  # sub-slices averaged across the slice thickness (through-plane partial volume)
_BIAS_SCALE = np.array([0.25, 0.25, 0.15, 0.15, 0.1, 0.08, 0.05])  # style A's bias-field coefficient sds


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


# ----------------------------------------------------------------------------------------------
# Sampling


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


# ----------------------------------------------------------------------------------------------
# Rendering


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


# ----------------------------------------------------------------------------------------------
# Writing


def _affine_and_flip(patient: _Patient, arrays: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The voxel-to-world affine, applying the patient's axis flips to the arrays and the affine.

    Flipping axis i reverses the array along i and negates affine column i, moving the origin to
    the old last voxel, so every voxel keeps its world position.
    """
    affine = np.eye(4)
    affine[:3, :3] = patient.rotation @ np.diag(patient.spacing)
    affine[:3, 3] = patient.origin
    for axis, flip in enumerate(patient.flips):
        if flip:
            affine[:3, 3] += affine[:3, axis] * (patient.shape[axis] - 1)
            affine[:3, axis] *= -1.0
            arrays = [np.flip(a, axis=axis) for a in arrays]
    return affine, [np.ascontiguousarray(a) for a in arrays]


def _descrip(style: str) -> bytes:
    """The header's descrip field: the phantom marker, then the style unless it is A (style A files
    stay byte-identical to those written before styles existed, so no tag means style A)."""
    return PHANTOM_MARKER if style == "A" else PHANTOM_MARKER + b" style " + style.encode("ascii")


def phantom_style(path: Path) -> str | None:
    """The style ("A".."D") of a phantom .nii.gz from its header, None if it is not a phantom file."""
    if not _is_phantom_file(path):
        return None
    with gzip.open(path, "rb") as stream:
        descrip = stream.read(348)[148:228].split(b"\0", 1)[0]
    tag = descrip[len(PHANTOM_MARKER) :].decode("ascii", "replace").strip()
    return tag.removeprefix("style ").strip() or "A"


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray, style: str = "A") -> None:
    """Write a gzipped NIfTI-1 with qform = sform = affine (codes 1) and a fixed gzip timestamp."""
    image = nib.Nifti1Image(array, affine)
    image.header.set_data_dtype(array.dtype)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = _descrip(style)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=1, mtime=0))


def _is_phantom_file(path: Path) -> bool:
    """Whether a .nii.gz was written by this module (its header's descrip field carries the marker)."""
    try:
        with gzip.open(path, "rb") as stream:
            header = stream.read(348)
    except (OSError, EOFError):
        return False
    return len(header) == 348 and header[148:228].startswith(PHANTOM_MARKER)


def _check_overwritable(patient_dir: Path) -> None:
    """Refuse to write into a patient directory holding NIfTI files that are not phantom files
    (for example real ACDC data)."""
    if not patient_dir.is_dir():
        return
    foreign = [p.name for p in sorted(patient_dir.glob("*.nii*")) if not _is_phantom_file(p)]
    if foreign:
        raise UserError(
            f"{patient_dir}: holds {foreign[0]}, which is not a phantom file; "
            "refusing to overwrite it (choose an empty --out)"
        )


def _write_patient(out_dir: Path, patient_index: int, seed: int, style: str = "A") -> Path:
    # Independent streams from (seed, patient) alone: parameters, texture fields, ED and ES noise.
    root = np.random.SeedSequence([seed, patient_index])
    streams = [np.random.default_rng(s) for s in root.spawn(4)]
    params_rng, fields_rng, ed_noise, es_noise = streams
    patient = _sample_patient(patient_index, params_rng)  # anatomy (and style A's acquisition)
    if style != "A":
        # Acquisition, texture and noise of another style from a stream of its own: a sibling of
        # the four above (spawn key 16 + style index), so the anatomy stream is untouched.
        style_seq = np.random.SeedSequence([seed, patient_index], spawn_key=(16 + STYLES.index(style),))
        style_rng, fields_rng, ed_noise, es_noise = [np.random.default_rng(s) for s in style_seq.spawn(4)]
        patient = _restyle(patient, style, style_rng)
    tex, fine_scale = patient.texture_scale
    texture = _smooth_noise(fields_rng, patient.shape, (tex, tex, 0.3))
    fine = _smooth_noise(fields_rng, patient.shape, (fine_scale, fine_scale, 0.0))

    patient_dir = out_dir / patient.patient_id
    patient_dir.mkdir(parents=True, exist_ok=True)
    for stale in patient_dir.glob(f"{patient.patient_id}_frame*.nii.gz"):  # earlier runs' frames
        stale.unlink()
    for phase, frame, noise_rng in (("ED", patient.ed_frame, ed_noise), ("ES", patient.es_frame, es_noise)):
        image, labels = _render_phase(patient, phase, texture, fine, noise_rng)
        affine, (image, labels) = _affine_and_flip(patient, [image, labels])
        stem = f"{patient.patient_id}_frame{frame:02d}"
        _write_nifti(patient_dir / f"{stem}.nii.gz", image, affine, style)
        _write_nifti(patient_dir / f"{stem}_gt.nii.gz", labels, affine, style)
    (patient_dir / "Info.cfg").write_text(
        f"ED: {patient.ed_frame}\nES: {patient.es_frame}\nGroup: {patient.group}\n"
        f"Height: {patient.height:.1f}\nNbFrame: {patient.n_frames}\nWeight: {patient.weight:.1f}\n"
    )
    return patient_dir


def write_acdc_phantom(out_dir: Path, patients: int = 100, seed: int = 0, style: str = "A", first: int = 1) -> list[Path]:
    """Write `patients` patients numbered from `first` (default patient001..patientNNN) under out_dir;
    return the patient directories. A `first` past another phantom's last patient gives a phantom of
    other patients and other case names (a domain-adaptation target beside a source).

    Each patient depends only on (seed, its number, style): the same arguments give byte-identical
    files, and patient k is the same whether 10 or 100 patients are written. The anatomy (and so
    Info.cfg) depends on (seed, number) only; `style` ("A".."D", see the module docstring) changes
    the acquisition. Re-running over an earlier phantom replaces its frames; a patient directory
    with other NIfTI files is refused (UserError).
    """
    if isinstance(patients, bool) or not isinstance(patients, (int, np.integer)) or patients < 1:
        raise UserError(f"--patients: expected a positive integer, got {patients!r}")
    if isinstance(first, bool) or not isinstance(first, (int, np.integer)) or first < 1:
        raise UserError(f"--first: expected a positive integer, got {first!r}")
    if first + patients - 1 > 999:
        raise UserError(f"--patients/--first: patient numbers up to 999 (patientNNN has three digits), got {first + patients - 1}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"--seed: expected a non-negative integer, got {seed!r}")
    if not isinstance(style, str) or style.strip().upper() not in STYLES:
        raise UserError(f"--style: expected one of {', '.join(STYLES)}, got {style!r}")
    style = style.strip().upper()
    out_dir = Path(out_dir)
    numbers = range(int(first), int(first) + int(patients))
    for k in numbers:
        _check_overwritable(out_dir / f"patient{k:03d}")
    out_dir.mkdir(parents=True, exist_ok=True)
    return [_write_patient(out_dir, k, int(seed), style) for k in numbers]
