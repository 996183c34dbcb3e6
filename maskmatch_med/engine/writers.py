"""Writers for predictions: label NIfTI files and float maps (probabilities, uncertainty) with a
reference's exact geometry, and QC montages.

Every writer is atomic: it writes a temporary file next to the target (same directory, same suffix so
the format and compression are right) and renames it over the target with ``os.replace``, so an
interrupted run never leaves a truncated output.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import nibabel as nib
import numpy as np

from maskmatch_med.errors import UserError

# Fixed class colours (RGB) for overlays; class 0 (background) is never drawn. ACDC: 1 RV red,
# 2 myocardium green, 3 LV blue; then yellow, cyan, magenta, orange, purple, lime, pink, teal, brown,
# maroon, mint, olive, navy (the README names them). Classes past the table reuse it cyclically.
CLASS_COLOURS = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (0, 130, 200),
        (255, 225, 25),
        (70, 240, 240),
        (240, 50, 230),
        (245, 130, 48),
        (145, 30, 180),
        (210, 245, 60),
        (250, 190, 212),
        (0, 128, 128),
        (170, 110, 40),
        (128, 0, 0),
        (170, 255, 195),
        (128, 128, 0),
        (0, 0, 128),
    ],
    dtype=np.float32,
)


def _suffix_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix


@contextmanager
def atomic_path(out_path: Path) -> Iterator[Path]:
    """Yield a temporary path in `out_path`'s directory with the same suffix; on success rename it
    to `out_path`, on failure delete it."""
    out_path = Path(out_path)
    suffix = _suffix_of(out_path)
    tmp = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, out_path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def check_output_directory(path: Path, option: str) -> None:
    """Refuse, in one line naming `option`, an output directory that is a file or lies under one:
    checked before anything is computed, since the first write would otherwise fail half-way with a
    traceback. A directory that does not exist yet is fine (it is created when the first file is written)."""
    path = Path(path)
    for existing in (path, *path.parents):
        if not existing.exists():
            continue
        if not existing.is_dir():
            where = "is a file" if existing == path else f"lies under {existing}, which is a file"
            raise UserError(f"{option}: {path} {where}, not a directory; choose a directory (it is created if missing)")
        return


def write_text_atomic(text: str, out_path: Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out_path


def write_json_atomic(obj, out_path: Path) -> Path:
    return write_text_atomic(json.dumps(obj, indent=2) + "\n", out_path)


def write_label_like(labels: np.ndarray, reference_path: Path, out_path: Path) -> Path:
    """Write `labels` as a uint8 NIfTI with exactly the reference's geometry.

    The header is the reference's own (shape, qform/sform and their codes, pixdim incl. qfac, units),
    with the data type set to uint8 and neutral scaling, so every reader (nibabel, ITK, MONAI, viewers)
    places each label on the voxel it was predicted for. `labels` must have the reference's shape
    (trailing singleton dimensions of the reference aside). Raises ValueError otherwise.
    """
    reference_path, out_path = Path(reference_path), Path(out_path)
    if not out_path.name.lower().endswith((".nii", ".nii.gz")):
        raise ValueError(f"{out_path}: label output must end in .nii or .nii.gz")
    ref = nib.load(str(reference_path))
    if not isinstance(ref, (nib.Nifti1Image, nib.Nifti1Pair, nib.Nifti2Image)):
        raise ValueError(f"{reference_path}: reference is not a NIfTI image ({type(ref).__name__})")
    labels = np.asarray(labels)
    ref_shape = tuple(int(d) for d in ref.shape)
    squeezed = ref_shape
    while len(squeezed) > 3 and squeezed[-1] == 1:
        squeezed = squeezed[:-1]
    if tuple(labels.shape) not in (ref_shape, squeezed):
        raise ValueError(
            f"labels of shape {tuple(labels.shape)} do not match the shape {ref_shape} of {reference_path}"
        )
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_):
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError("labels must be integers")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"labels must lie in [0, 255] to be stored as uint8, got [{labels.min()}, {labels.max()}]")
    data = np.ascontiguousarray(labels.astype(np.uint8, copy=False).reshape(ref_shape))

    header = ref.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"] = 0
    header["cal_max"] = 0
    image_class = nib.Nifti2Image if isinstance(ref, nib.Nifti2Image) else nib.Nifti1Image
    if image_class is nib.Nifti1Image and not isinstance(header, nib.Nifti1Header):
        header = nib.Nifti1Header.from_header(header)
    # affine=None: the geometry comes from the copied header fields untouched (nibabel would otherwise
    # rewrite the qform/sform codes).
    img = image_class(data, None, header)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        nib.save(img, str(tmp))
    return out_path


def write_map_like(data: np.ndarray, reference_path: Path, out_path: Path) -> Path:
    """float32 NIfTI of (X, Y, Z) or (X, Y, Z, C) values on the reference's grid: its header (affine,
    qform/sform codes, spacing) with the shape and data type changed, written atomically."""
    ref = nib.load(str(reference_path))
    data = np.ascontiguousarray(data, dtype=np.float32)
    if tuple(data.shape[:3]) != tuple(ref.shape[:3]):
        raise ValueError(f"map of shape {data.shape} does not fit {reference_path} of shape {ref.shape}")
    header = ref.header.copy()
    if not isinstance(header, nib.Nifti1Header):
        header = nib.Nifti1Header.from_header(header)
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"] = header["cal_max"] = 0
    if data.ndim == 4:
        header["pixdim"][4] = 1.0
        header.set_intent("vector")  # one value per class, not a time series
    image_class = nib.Nifti2Image if isinstance(ref, nib.Nifti2Image) else nib.Nifti1Image
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        nib.save(image_class(data, None, header), str(tmp))
    return out_path


def _display(slice2d: np.ndarray) -> np.ndarray:
    """Stored slice (A, B) -> picture (rows, cols): A runs left to right, B bottom to top
    (the usual ``imshow(slice.T, origin="lower")`` convention)."""
    return np.flipud(np.asarray(slice2d).T)


def montage_slice_indices(num_slices: int, max_slices: int) -> list[int]:
    """Up to `max_slices` slice indices spread evenly over [0, num_slices)."""
    if num_slices <= 0:
        return []
    count = max(1, min(int(max_slices), num_slices))
    if count == 1:
        return [num_slices // 2]
    return sorted(set(int(round(i)) for i in np.linspace(0, num_slices - 1, count)))


def montage_grid(count: int) -> tuple[int, int]:
    """(rows, cols) of the montage grid for `count` tiles: near-square, wider than tall."""
    cols = max(1, math.ceil(math.sqrt(count)))
    rows = max(1, math.ceil(count / cols))
    return rows, cols


def display_window(image: np.ndarray) -> tuple[float, float]:
    """The 1st-99th percentile intensity window of the finite voxels."""
    finite = np.asarray(image, dtype=np.float32)
    finite = finite[np.isfinite(finite)]
    return tuple(float(v) for v in np.percentile(finite, [1, 99])) if finite.size else (0.0, 1.0)


def overlay_rgb(slice2d: np.ndarray, labels2d: np.ndarray, alpha: float = 0.45, window: tuple[float, float] | None = None) -> np.ndarray:
    """One stored slice as a uint8 RGB picture (see _display): grey intensities in `window`
    (default: the slice's own 1-99 percentiles) with the labels blended in their class colours."""
    lo, hi = window if window is not None else display_window(slice2d)
    grey = np.clip((np.nan_to_num(np.asarray(slice2d, dtype=np.float32)) - lo) / max(hi - lo, 1e-6), 0.0, 1.0) * 255.0
    grey = _display(grey)
    lab = _display(labels2d).astype(np.int64)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    fg = lab > 0
    if fg.any():
        colours = CLASS_COLOURS[(lab[fg] - 1) % len(CLASS_COLOURS)]
        rgb[fg] = (1.0 - alpha) * rgb[fg] + alpha * colours
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


# The legend strip under a montage: one row of swatches and names per LEGEND_ROW pixels (wrapped to
# the picture's width), LEGEND_PAD pixels around; each swatch a LEGEND_SWATCH-pixel square of the
# class's full colour (the overlay blends it with the grey at `alpha`).
LEGEND_ROW, LEGEND_PAD, LEGEND_SWATCH, LEGEND_GAP = 18, 4, 12, 12


def class_colour(label: int) -> tuple[int, int, int]:
    """The overlay colour of foreground `label` (1 first), as uint8 RGB."""
    return tuple(int(v) for v in CLASS_COLOURS[(int(label) - 1) % len(CLASS_COLOURS)])  # type: ignore[return-value]


def _legend_layout(names: Sequence[str], width: int, text_width) -> list[list[tuple[int, int]]]:
    """Rows of (class index into `names`, x offset): items left to right, wrapped at `width` (an item
    wider than that gets a row of its own)."""
    rows: list[list[tuple[int, int]]] = [[]]
    x = LEGEND_PAD
    for index, name in enumerate(names):
        item = LEGEND_SWATCH + 4 + int(math.ceil(text_width(name)))
        if rows[-1] and x + item > width - LEGEND_PAD:
            rows.append([])
            x = LEGEND_PAD
        rows[-1].append((index, x))
        x += item + LEGEND_GAP
    return rows


def legend_strip(names: Sequence[str], width: int) -> np.ndarray:
    """A black (H, W, 3) uint8 strip, W >= `width`, naming each foreground class beside a swatch of its
    colour, label 1 first: a QC montage must say which colour is which class without the README at hand."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = lambda text: measure.textlength(text, font=font)
    rows = _legend_layout(names, width, text_width)
    widest = max(x + LEGEND_SWATCH + 4 + int(math.ceil(text_width(names[i]))) for row in rows for i, x in row)
    strip = Image.new("RGB", (max(width, widest + LEGEND_PAD), len(rows) * LEGEND_ROW + LEGEND_PAD), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    for r, row in enumerate(rows):
        top = LEGEND_PAD + r * LEGEND_ROW
        for index, x in row:
            draw.rectangle([x, top, x + LEGEND_SWATCH - 1, top + LEGEND_SWATCH - 1], fill=class_colour(index + 1))
            _, text_top, _, text_bottom = draw.textbbox((0, 0), names[index], font=font)
            centred = top + (LEGEND_SWATCH - (text_bottom - text_top)) // 2 - text_top  # beside the swatch
            draw.text((x + LEGEND_SWATCH + 4, centred), names[index], fill=(255, 255, 255), font=font)
    return np.asarray(strip, dtype=np.uint8)


def with_legend(picture: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """`picture` with the legend strip of `names` below it (both widened with black to the wider one)."""
    strip = legend_strip(names, picture.shape[1])
    width = max(picture.shape[1], strip.shape[1])
    out = np.zeros((picture.shape[0] + strip.shape[0], width, 3), dtype=np.uint8)
    out[: picture.shape[0], : picture.shape[1]] = picture
    out[picture.shape[0] :, : strip.shape[1]] = strip
    return out


def write_overlay_montage(
    image: np.ndarray, labels: np.ndarray, out_path: Path, slice_axis: int, max_slices: int = 12, alpha: float = 0.45,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write a QC PNG: evenly chosen slices along `slice_axis` in a near-square grid, grey intensities
    windowed to the volume's 1st-99th percentiles, labels blended in fixed class colours.

    Each tile is one stored slice at native resolution: with (A, B) the two other axes in order, A runs
    left to right and B bottom to top. The tiles fill rows*B pixels by cols*A pixels,
    (rows, cols) = montage_grid(number of slices shown). With `class_names` (foreground, label 1 first)
    a legend strip below the tiles shows each class's colour and name (see legend_strip).
    """
    image = np.asarray(image, dtype=np.float32)
    labels = np.asarray(labels)
    if image.ndim != 3 or image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must be 3D arrays of the same shape")
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    lo, hi = display_window(image)
    indices = montage_slice_indices(image.shape[slice_axis], max_slices)
    rows, cols = montage_grid(len(indices))
    tiles = [
        overlay_rgb(np.take(image, index, axis=slice_axis), np.take(labels, index, axis=slice_axis), alpha, (lo, hi))
        for index in indices
    ]
    tile_h, tile_w = tiles[0].shape[:2]
    picture = np.zeros((rows * tile_h, cols * tile_w, 3), dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        picture[r * tile_h : (r + 1) * tile_h, c * tile_w : (c + 1) * tile_w] = tile
    if class_names:
        picture = with_legend(picture, class_names)

    from skimage import io as skio

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp:
        skio.imsave(str(tmp), picture, check_contrast=False)
    return out_path
