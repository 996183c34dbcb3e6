"""The phantom written in the ACDC on-disk layout: a patient's two frames (ED, ES) and their label maps
as gzipped NIfTI with a non-trivial affine, and Info.cfg.

Reproducibility: patient k is generated from `numpy.random.SeedSequence([seed, k])` alone (and
the style), so its files are identical for the same seed and style whatever the number of
patients; the NIfTI files are gzipped with a zero timestamp, so they are byte-identical too.

Every header's descrip field carries the phantom marker (and the style unless it is A), so that a
directory of real data is never overwritten and `phantom_style(path)` can read the style back.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from maskmatch_med.data.phantom.acquisition import STYLES, _Patient, _render_phase, _restyle, _sample_patient, _smooth_noise
from maskmatch_med.errors import UserError

# Written into every NIfTI header's descrip field; marks files this module may overwrite.
PHANTOM_MARKER = b"maskmatch-med synthetic ACDC phantom"


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
