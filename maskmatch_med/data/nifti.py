"""Reading NIfTI images and label maps, as stored (no reorientation, no resampling).

The array keeps the file's voxel order, so a prediction made on it can be written back with the
file's own header (see ``engine.writers.write_label_like``): geometry is never touched.
Every problem with a file is reported as a one-line ``UserError`` that names the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from maskmatch_med.errors import UserError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class Volume:
    """A 3D image as stored in its file."""

    array: np.ndarray  # (X, Y, Z), float32 for images, integer for label maps
    affine: np.ndarray  # 4x4 voxel -> world (nibabel's best affine: sform, else qform)
    spacing: tuple[float, float, float]  # voxel size along the three array axes (header zooms)
    path: Path


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def open_nifti(path: Path) -> nib.spatialimages.SpatialImage:
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if not path.is_file():
        raise UserError(f"{path}: not a file")
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for bad files
        raise UserError(f"{path}: cannot read as a NIfTI image ({_one_line(exc)})") from None


def _frame_of(path: Path, img, frame: int):
    """The 3D volume at time index `frame` of a 4D (x, y, z, t) image, as a nibabel image."""
    shape = tuple(int(d) for d in img.shape)
    if len(shape) != 4:
        raise UserError(f"{path}: expected a 4D (x, y, z, t) image to take time frame {frame} from, got shape {shape}")
    if not 0 <= frame < shape[3]:
        raise UserError(f"{path}: time frame {frame} out of range, the image has {shape[3]} frames (0..{shape[3] - 1})")
    try:
        return img.slicer[..., frame]
    except Exception as exc:
        raise UserError(f"{path}: cannot read time frame {frame} ({_one_line(exc)})") from None


def _check_3d(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The 3D shape to use for an image stored with `shape`, or a UserError.

    Trailing singleton dimensions (a 4D file holding one volume) are dropped."""
    dims = tuple(int(d) for d in shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims = dims[:-1]
    if len(dims) == 3:
        if min(dims) < 1:
            raise UserError(f"{path}: empty image of shape {dims}")
        return dims  # type: ignore[return-value]
    if len(dims) > 3:
        extra = ", ".join(f"axis {i} has size {d}" for i, d in enumerate(dims) if i >= 3)
        raise UserError(
            f"{path}: expected a 3D image, got {len(dims)}D of shape {dims} ({extra}); "
            "split it into 3D volumes (one per time point / channel) first"
        )
    raise UserError(f"{path}: expected a 3D image, got {len(dims)}D of shape {dims}")


def read_data(path: Path, img, dtype) -> np.ndarray:
    """The whole data block of `img`, opened from `path` (read now, so truncated or corrupt files fail
    here, not later): floats for a floating `dtype`, the stored values otherwise."""
    try:
        if np.issubdtype(np.dtype(dtype), np.floating):
            data = np.asarray(img.get_fdata(dtype=np.float64 if np.dtype(dtype) == np.float64 else np.float32))
        else:
            data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise UserError(f"{path}: cannot read the image data, the file may be truncated or corrupt "
                        f"({_one_line(exc)})") from None
    return np.asarray(data)


def _spacing(img) -> tuple[float, float, float]:
    zooms = img.header.get_zooms()[:3]
    spacing = tuple(float(z) for z in zooms)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        return tuple(float(s) for s in np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0))  # type: ignore[return-value]
    return spacing  # type: ignore[return-value]


def load_volume(path: Path, dtype=np.float32, frame: int | None = None) -> Volume:
    """Load a 3D NIfTI image as `dtype` (float32 by default), in stored voxel order; with `frame`, the
    3D volume at that time index of a 4D file.

    Raises UserError (naming the file) for a missing, unreadable or corrupt file, an image that is not
    3D (a 4D file with a single volume is accepted), and non-finite intensities.
    """
    path = Path(path)
    img = open_nifti(path)
    if frame is not None:
        img = _frame_of(path, img, frame)
    shape = _check_3d(path, img.shape)
    data = read_data(path, img, dtype).reshape(shape)
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        if not finite.all():
            bad = int(data.size - np.count_nonzero(finite))
            raise UserError(f"{path}: {bad} voxel(s) have NaN or infinite intensities")
    data = data.astype(dtype, copy=False)
    return Volume(array=data, affine=np.asarray(img.affine, dtype=np.float64), spacing=_spacing(img), path=path)


def _smallest_int_dtype(lo: int, hi: int) -> np.dtype:
    for candidate in (np.uint8, np.int16, np.int32, np.int64):
        info = np.iinfo(candidate)
        if info.min <= lo and hi <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.int64)


def integer_labels(path: Path, data: np.ndarray) -> np.ndarray:
    """`data`, the stored values of the label map `path`, as integers (integer types kept, integral
    floats converted to the smallest type that holds them).

    Raises UserError (naming the file) for non-finite, non-integral or negative values and for
    unsupported data types: probabilities or an image passed as labels fail here."""
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            raise UserError(f"{path}: label map contains NaN or infinite values")
        if not np.array_equal(data, np.round(data)):
            raise UserError(f"{path}: label map has non-integer values; is this an image rather than labels?")
    elif not np.issubdtype(data.dtype, np.integer) and data.dtype != np.bool_:
        raise UserError(f"{path}: unsupported label data type {data.dtype}")
    if data.size and data.min() < 0:
        raise UserError(f"{path}: label map has negative values (minimum {int(data.min())})")
    if not np.issubdtype(data.dtype, np.integer):
        hi = int(data.max()) if data.size else 0
        data = data.astype(_smallest_int_dtype(0, hi))
    return data


def load_label(path: Path, frame: int | None = None, lut: tuple[int, ...] | None = None) -> Volume:
    """Load a 3D NIfTI label map as integers (see `integer_labels`); `frame` as for `load_volume`;
    `lut` maps stored value v to lut[v] (a dataset's class order to ours).

    Raises UserError (naming the file) as `load_volume` and `integer_labels` do.
    """
    path = Path(path)
    img = open_nifti(path)
    if frame is not None:
        img = _frame_of(path, img, frame)
    shape = _check_3d(path, img.shape)
    data = integer_labels(path, read_data(path, img, np.int64).reshape(shape))  # raw stored values (scaling applied if any)
    if lut is not None:
        hi = int(data.max()) if data.size else 0
        if hi >= len(lut):
            raise UserError(f"{path}: label value {hi} has no mapping (expected 0..{len(lut) - 1})")
        data = np.asarray(lut, dtype=data.dtype)[data]
    return Volume(array=data, affine=np.asarray(img.affine, dtype=np.float64), spacing=_spacing(img), path=path)


def is_nifti(path: Path) -> bool:
    """True for file names ending in .nii or .nii.gz (case-insensitive)."""
    name = Path(path).name.lower()
    return name.endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    """The file name without .nii / .nii.gz."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem
