"""Label NIfTI writer (exact reference geometry, atomic) and the QC montage."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import maskmatch_med.engine.writers as writers
from maskmatch_med.engine.writers import (
    CLASS_COLOURS,
    LEGEND_PAD,
    LEGEND_ROW,
    LEGEND_SWATCH,
    class_colour,
    montage_grid,
    montage_slice_indices,
    write_label_like,
    write_overlay_montage,
)


def _reference(path, shape=(11, 13, 5), codes=(1, 1), dtype=np.int16):
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[-1.4 * c, -1.4 * s, 0, 30.0], [1.4 * s, -1.4 * c, 0, -12.0], [0, 0, 8.0, 4.5], [0, 0, 0, 1]])
    img = nib.Nifti1Image((np.random.default_rng(0).random(shape) * 500).astype(dtype), affine)
    img.header.set_qform(affine, code=codes[0])
    img.header.set_sform(affine, code=codes[1])
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("codes", [(1, 1), (1, 0), (0, 2)])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_write_label_like_copies_geometry(tmp_path, codes, suffix):
    ref = _reference(tmp_path / "ref.nii.gz", codes=codes)
    labels = np.zeros((11, 13, 5), np.int64)
    labels[2:5, 7:12, 1] = 3
    out = write_label_like(labels, ref, tmp_path / "out" / f"pred{suffix}")
    assert out == tmp_path / "out" / f"pred{suffix}"
    a, b = nib.load(str(ref)), nib.load(str(out))
    assert b.shape == a.shape and b.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(b.dataobj), labels)
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-6)
    assert (int(b.header["qform_code"]), int(b.header["sform_code"])) == (int(a.header["qform_code"]), int(a.header["sform_code"]))
    np.testing.assert_allclose(b.header.get_qform(), a.header.get_qform(), atol=1e-6)
    np.testing.assert_allclose(b.header.get_sform(), a.header.get_sform(), atol=1e-6)
    np.testing.assert_allclose(b.header["pixdim"], a.header["pixdim"])
    assert b.header.get_xyzt_units() == a.header.get_xyzt_units()
    slope, inter = b.header.get_slope_inter()
    assert slope in (None, 1.0) and inter in (None, 0.0)
    ia, ib = sitk.ReadImage(str(ref)), sitk.ReadImage(str(out))
    np.testing.assert_allclose(ib.GetSpacing(), ia.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(ib.GetOrigin(), ia.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ib.GetDirection(), ia.GetDirection(), atol=1e-4)
    if suffix == ".nii.gz":
        with gzip.open(out) as f:
            f.read(4)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp files left


def test_write_label_like_keeps_a_singleton_4d_reference_shape(tmp_path):
    ref = _reference(tmp_path / "ref.nii.gz", shape=(11, 13, 5, 1))
    out = write_label_like(np.ones((11, 13, 5), np.uint8), ref, tmp_path / "pred.nii.gz")
    assert nib.load(str(out)).shape == (11, 13, 5, 1)


def test_write_label_like_rejects_bad_labels(tmp_path):
    ref = _reference(tmp_path / "ref.nii.gz")
    with pytest.raises(ValueError, match="do not match the shape"):
        write_label_like(np.zeros((13, 11, 5), np.uint8), ref, tmp_path / "a.nii.gz")
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        write_label_like(np.full((11, 13, 5), 300), ref, tmp_path / "b.nii.gz")
    with pytest.raises(ValueError, match=".nii"):
        write_label_like(np.zeros((11, 13, 5), np.uint8), ref, tmp_path / "c.mha")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.nii.gz"]


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    ref = _reference(tmp_path / "ref.nii.gz")
    out = write_label_like(np.ones((11, 13, 5), np.uint8), ref, tmp_path / "out" / "pred.nii.gz")
    before = out.read_bytes()

    def crash(img, filename):  # writes half a file, then dies
        with open(filename, "wb") as f:
            f.write(before[: len(before) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(writers.nib, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        write_label_like(np.zeros((11, 13, 5), np.uint8), ref, out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["pred.nii.gz"]


def test_montage_size_slices_and_colours(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, size=(40, 30, 9)).astype(np.float32)
    labels = np.zeros((40, 30, 9), np.uint8)
    labels[:, :, 4] = 1  # a fully labelled slice: tile 4 (middle of the 3x3 grid) is tinted red
    out = write_overlay_montage(image, labels, tmp_path / "qc" / "case.png", slice_axis=2)
    from skimage import io as skio

    pic = skio.imread(str(out))
    assert pic.shape == (3 * 30, 3 * 40, 3) and pic.dtype == np.uint8  # 9 slices -> 3x3 tiles, A across
    tinted = pic[30:60, 40:80].astype(float)
    plain = pic[0:30, 0:40].astype(float)
    red = CLASS_COLOURS[0]
    assert abs(tinted[..., 0].mean() - tinted[..., 1].mean()) > 40  # red dominates on the labelled tile
    assert np.allclose(plain[..., 0], plain[..., 1], atol=1)  # grey elsewhere
    assert red[0] > red[1]
    assert sorted(p.name for p in out.parent.iterdir()) == ["case.png"]

    # many slices along another axis: at most max_slices tiles
    image2 = rng.normal(size=(7, 50, 20)).astype(np.float32)
    out2 = write_overlay_montage(image2, np.zeros_like(image2, dtype=np.uint8), tmp_path / "b.png", slice_axis=1,
                                 max_slices=12)
    rows, cols = montage_grid(12)
    assert skio.imread(str(out2)).shape == (rows * 20, cols * 7, 3)


def swatch_pixels(strip: np.ndarray, colour) -> int:
    """How many pixels of `strip` have exactly `colour` (a legend swatch; the overlay only blends it)."""
    return int(np.all(strip == np.asarray(colour, np.uint8), axis=-1).sum())


def test_montage_legend_names_each_class_colour(tmp_path):
    """The montage had no legend: which colour was which class was written nowhere in the picture."""
    from skimage import io as skio

    image = np.random.default_rng(0).normal(100, 10, size=(40, 30, 9)).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[5:20, 5:20, :] = 1
    plain = skio.imread(str(write_overlay_montage(image, labels, tmp_path / "plain.png", slice_axis=2)))
    out = write_overlay_montage(image, labels, tmp_path / "legend.png", slice_axis=2, class_names=["A", "B", "C"])
    pic = skio.imread(str(out))
    assert pic.shape == (3 * 30 + LEGEND_ROW + LEGEND_PAD, 3 * 40, 3)  # one legend row below the 3x3 tiles
    assert np.array_equal(pic[:90], plain)  # the tiles themselves are unchanged
    strip = pic[90:]
    first = strip[LEGEND_PAD : LEGEND_PAD + LEGEND_SWATCH, LEGEND_PAD : LEGEND_PAD + LEGEND_SWATCH]
    assert np.all(first == np.asarray(class_colour(1), np.uint8))  # class 1's swatch first, top left
    for label in (1, 2, 3):  # every class, present in the labels or not, gets its swatch
        assert swatch_pixels(strip, class_colour(label)) == LEGEND_SWATCH**2
    text = (strip.min(axis=-1) == strip.max(axis=-1)) & (strip.max(axis=-1) > 100)
    assert text.sum() > 0  # and the names, in white (antialiased: light greys)
    # A narrow montage wraps the legend into rows and widens to the longest name.
    narrow = skio.imread(str(write_overlay_montage(image[:6, :, :1], labels[:6, :, :1], tmp_path / "n.png", 2,
                                                  class_names=["background-like long name", "B"])))
    assert narrow.shape[0] == 30 + 2 * LEGEND_ROW + LEGEND_PAD and narrow.shape[1] > 6


def test_montage_helpers_and_errors(tmp_path):
    assert montage_slice_indices(9, 12) == list(range(9))
    assert montage_slice_indices(100, 5) == [0, 25, 50, 74, 99]
    assert montage_slice_indices(7, 1) == [3]
    assert montage_grid(12) == (3, 4) and montage_grid(1) == (1, 1) and montage_grid(10) == (3, 4)
    with pytest.raises(ValueError):
        write_overlay_montage(np.zeros((4, 4, 4)), np.zeros((4, 4, 3)), tmp_path / "x.png", 2)
