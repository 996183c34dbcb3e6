"""Prediction of 3D NIfTI volumes with a 2D model: geometry, slicing, scales, refusals, input reading."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from maskmatch_med.data.nifti import load_label, load_volume
from maskmatch_med.data.preprocess import slice_axis_of
from maskmatch_med.errors import UserError
from maskmatch_med.scenarios.medical import collect_inputs
from maskmatch_med.scenarios.slices.inference import predict_files, predict_volume_labels, predict_volume_probabilities

INPUT_SIZE = (64, 64)


def bright_model(num_classes: int = 2) -> nn.Module:
    """1x1 conv: class 1 wins where the normalised intensity exceeds 1 (bright structure)."""
    conv = nn.Conv2d(1, num_classes, kernel_size=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[1, 0, 0, 0] = 10.0
        conv.bias[1] = -10.0
        for c in range(2, num_classes):  # extra classes never win but get some probability
            conv.bias[c] = -3.0
    return conv


class Recorder(nn.Module):
    """Wraps a model and records input shapes and the training flag seen at each forward."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.drop = nn.Dropout(0.5)
        self.calls: list[tuple[tuple[int, ...], bool]] = []

    def forward(self, x):
        self.calls.append((tuple(x.shape), self.training))
        return self.inner(self.drop(x))


def oblique_rotation() -> np.ndarray:
    def rot(axis: int, deg: float) -> np.ndarray:
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        i, j = [k for k in range(3) if k != axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m

    return rot(0, 20.0) @ rot(1, -12.0) @ rot(2, 33.0)


def phantom(shape, box, seed=0) -> np.ndarray:
    """Noisy background (~100) with a bright box (1000) at `box` (tuple of slices)."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(100.0, 5.0, size=shape).astype(np.float32)
    vol[box] = 1000.0
    return vol


def save_nifti(path, data, affine, codes=None, dtype=np.int16):
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    if codes is not None:
        img.header.set_qform(affine, code=codes[0])
        img.header.set_sform(affine, code=codes[1])
    nib.save(img, str(path))
    return path


def affine_from(linear: np.ndarray, origin) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = linear
    a[:3, 3] = origin
    return a


# (name, shape, affine, qform/sform codes, bright box); boxes are off-centre and asymmetric so that a
# swapped or flipped axis would move the labels away from the structure.
CASES = [
    (
        "flipped_anisotropic",
        (173, 211, 9),
        affine_from(np.diag([-1.4, -1.4, 8.0]), (120.0, 95.5, -30.0)),
        None,
        (slice(20, 60), slice(130, 190), slice(3, 7)),
    ),
    (
        "oblique",
        (173, 211, 9),
        affine_from(oblique_rotation() @ np.diag([1.4, 1.4, 8.0]) @ np.diag([1.0, -1.0, 1.0]), (-12.0, 40.0, 7.5)),
        (1, 1),
        (slice(100, 150), slice(15, 60), slice(1, 4)),
    ),
    (
        "slice_axis_middle",
        (57, 7, 63),
        affine_from(np.diag([1.5, -9.0, 1.5]), (3.0, 30.0, -8.0)),
        (2, 0),
        (slice(5, 25), slice(2, 5), slice(35, 58)),
    ),
]


@pytest.mark.parametrize("name,shape,affine,codes,box", CASES, ids=[c[0] for c in CASES])
def test_predict_files_keeps_geometry_and_places_labels(tmp_path, name, shape, affine, codes, box):
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    src = save_nifti(in_dir / f"{name}.nii.gz", phantom(shape, box), affine, codes)

    written = predict_files(
        bright_model(), [src], out_dir, INPUT_SIZE, scales=(1.0,), num_classes=2, class_names=None, progress=False
    )
    out = out_dir / src.name
    assert written == [out]

    a, b = nib.load(str(src)), nib.load(str(out))
    assert b.shape == a.shape == shape
    assert b.get_data_dtype() == np.uint8
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-6)
    for key in ("qform_code", "sform_code"):
        assert int(b.header[key]) == int(a.header[key])
    np.testing.assert_allclose(b.header.get_qform(), a.header.get_qform(), atol=1e-6)
    np.testing.assert_allclose(b.header.get_sform(), a.header.get_sform(), atol=1e-6)
    np.testing.assert_allclose(b.header.get_zooms(), a.header.get_zooms())
    assert nib.aff2axcodes(b.affine) == nib.aff2axcodes(a.affine)

    ia, ib = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    np.testing.assert_allclose(ib.GetSpacing(), ia.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(ib.GetOrigin(), ia.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ib.GetDirection(), ia.GetDirection(), atol=1e-4)
    assert ib.GetSize() == ia.GetSize()

    # Labels sit on the bright structure, voxel for voxel along the slice axis, within the resampling
    # blur in-plane.
    labels = np.asarray(b.dataobj)
    truth = np.zeros(shape, bool)
    truth[box] = True
    dice = 2 * np.sum(labels.astype(bool) & truth) / (labels.astype(bool).sum() + truth.sum())
    assert dice > 0.9, dice
    axis = slice_axis_of(a.header.get_zooms())
    inner = tuple(s if i == axis else slice(s.start + 4, s.stop - 4) for i, s in enumerate(box))
    assert labels[inner].min() == 1
    outer = np.ones(shape, bool)
    outer[tuple(slice(max(s.start - 4, 0), s.stop + 4) for s in box)] = False
    assert labels[outer].max() == 0

    # The same structure through SimpleITK's eyes: label centroid and bright centroid coincide in
    # world coordinates (the reader of the output agrees with the reader of the input), within the
    # sampling error of a ~3x in-plane downsampling (a flip or swap would move it by tens of mm).
    def world_centroid(image, mask_fn):
        arr = sitk.GetArrayFromImage(image)  # (z, y, x)
        idx = np.argwhere(mask_fn(arr)).mean(axis=0)[::-1]
        return np.array(image.TransformContinuousIndexToPhysicalPoint(idx.tolist()))

    np.testing.assert_allclose(
        world_centroid(ib, lambda x: x == 1), world_centroid(ia, lambda x: x > 500), atol=2.0 * min(a.header.get_zooms())
    )


def test_slices_go_through_the_coarsest_axis_in_eval_mode():
    shape = (57, 7, 63)
    vol = phantom(shape, (slice(5, 25), slice(2, 5), slice(35, 58)))
    model = Recorder(bright_model())
    model.train()
    labels = predict_volume_labels(model, vol, (1.5, 9.0, 1.5), INPUT_SIZE, batch_size=3)
    assert labels.shape == shape and labels.dtype == np.uint8
    assert [c[0] for c in model.calls] == [(3, 1, 64, 64), (3, 1, 64, 64), (1, 1, 64, 64)]
    assert not any(training for _, training in model.calls)
    assert model.training  # mode restored
    assert labels[:, 2:5, :].any() and not labels[:, [0, 1, 5, 6], :].any()


def test_multi_scale_shapes_and_probabilities():
    shape = (45, 38, 6)
    vol = phantom(shape, (slice(5, 20), slice(10, 30), slice(2, 4)))
    model = Recorder(bright_model(num_classes=4))
    probs, _ = predict_volume_probabilities(model, vol, (1.4, 1.4, 8.0), INPUT_SIZE, scales=(0.75, 1.0, 1.25))
    assert probs.shape == (4, *shape)
    assert probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(dim=0), torch.ones(shape), atol=1e-5, rtol=0)
    assert probs.min() >= 0
    assert {c[0][-2:] for c in model.calls} == {(48, 48), (64, 64), (80, 80)}
    labels = predict_volume_labels(bright_model(4), vol, (1.4, 1.4, 8.0), INPUT_SIZE, scales=(0.75, 1.0, 1.25))
    assert labels.shape == shape and labels[8:17, 13:27, 2:4].min() == 1 and labels[:, :, [0, 1, 4, 5]].max() == 0



def test_scale_disagreement_of_a_2d_network():
    """--uncertainty for 2D checkpoints: the scales' disagreement on the volume's grid, 0 for one scale;
    asking for it leaves the probabilities as they are."""
    shape = (45, 38, 6)
    vol = phantom(shape, (slice(5, 20), slice(10, 30), slice(2, 4)))
    scales = (0.75, 1.0, 1.25)
    probs, spread = predict_volume_probabilities(bright_model(4), vol, (1.4, 1.4, 8.0), INPUT_SIZE, scales, uncertainty=True)
    plain, none = predict_volume_probabilities(bright_model(4), vol, (1.4, 1.4, 8.0), INPUT_SIZE, scales)
    assert none is None and torch.equal(probs, plain)
    assert spread.shape == shape and spread.dtype == torch.float32
    assert spread.min() >= 0 and spread.max() <= 1 and spread.max() > 0
    assert spread[:, :, [0, 1, 4, 5]].max() < spread[:, :, 2:4].max()  # the scales disagree at the structure's edges
    _, single = predict_volume_probabilities(bright_model(4), vol, (1.4, 1.4, 8.0), INPUT_SIZE, (1.0,), uncertainty=True)
    assert torch.count_nonzero(single) == 0

def _tiny_inputs(directory, names=("case_a.nii.gz", "case_b.nii")):
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        vol = phantom((20, 18, 4), (slice(3, 9), slice(4, 12), slice(1, 3)), seed=i)
        paths.append(save_nifti(directory / name, vol, affine_from(np.diag([1.4, 1.4, 8.0]), (0, 0, 0))))
    return paths


def test_output_dir_equal_to_input_dir_is_refused_before_writing(tmp_path):
    inputs = _tiny_inputs(tmp_path / "data")
    before = {p.name: p.read_bytes() for p in (tmp_path / "data").iterdir()}
    with pytest.raises(UserError, match="output directory is the directory of input"):
        predict_files(bright_model(), inputs, tmp_path / "data", INPUT_SIZE, (1.0,), 2, ["fg"], png=True, progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "data").iterdir()} == before
    # the same directory spelled differently is still refused
    with pytest.raises(UserError):
        predict_files(bright_model(), inputs, tmp_path / "data" / ".." / "data", INPUT_SIZE, (1.0,), 2, None, progress=False)
    assert sorted(before) == sorted(p.name for p in (tmp_path / "data").iterdir())


def test_colliding_outputs_and_bad_class_names_refused_before_writing(tmp_path):
    a = _tiny_inputs(tmp_path / "x", names=("same.nii.gz",))
    b = _tiny_inputs(tmp_path / "y", names=("same.nii.gz",))
    out = tmp_path / "out"
    with pytest.raises(UserError, match="distinct names"):
        predict_files(bright_model(), a + b, out, INPUT_SIZE, (1.0,), 2, None, progress=False)
    with pytest.raises(UserError, match="class_names"):
        predict_files(bright_model(), a, out, INPUT_SIZE, (1.0,), 4, ["RV", "Myo"], progress=False)
    assert not out.exists()
    with pytest.raises(UserError, match="model outputs 2 classes"):
        predict_files(bright_model(), a, out, INPUT_SIZE, (1.0,), 4, ["RV", "Myo", "LV"], progress=False)
    assert not out.exists()


def test_predict_files_outputs_labels_json_png_and_no_temp_files(tmp_path):
    inputs = _tiny_inputs(tmp_path / "in")
    out = tmp_path / "out"
    written = predict_files(
        bright_model(4), inputs, out, INPUT_SIZE, (0.75, 1.0, 1.25), 4, ["RV", "Myo", "LV"], png=True, progress=False
    )
    assert written == [out / "case_a.nii.gz", out / "case_b.nii"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["case_a.nii.gz", "case_b.nii", "case_a.png", "case_b.png", "labels.json"]
    )
    assert json.loads((out / "labels.json").read_text()) == {"0": "background", "1": "RV", "2": "Myo", "3": "LV"}
    with gzip.open(out / "case_a.nii.gz") as f:  # really gzip-compressed
        f.read(10)
    from skimage import io as skio

    from maskmatch_med.engine.writers import LEGEND_PAD, LEGEND_ROW

    height, width = skio.imread(str(out / "case_a.png")).shape[:2]
    # 4 slices: 2x2 tiles of 18x20, then the legend, wrapped into rows at the tiles' 40 px (or wider)
    assert height > 2 * 18 and (height - 2 * 18 - LEGEND_PAD) % LEGEND_ROW == 0 and width >= 2 * 20


def test_collect_inputs(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name in ["p2_frame01.nii.gz", "p1_frame01.nii.gz", "p1_frame01_gt.nii.gz", "b.nii", "b_gt.nii", "notes.txt",
                 ".hidden.nii.gz"]:
        (d / name).write_bytes(b"")
    (d / "sub.nii.gz").mkdir()
    assert [p.name for p in collect_inputs(d)] == ["b.nii", "p1_frame01.nii.gz", "p2_frame01.nii.gz"]
    assert collect_inputs(d / "b.nii") == [d / "b.nii"]
    with pytest.raises(UserError, match="not found"):
        collect_inputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .nii"):
        collect_inputs(tmp_path / "empty")
    with pytest.raises(UserError, match="not a NIfTI"):
        collect_inputs(d / "notes.txt")


# ---- reading NIfTI files ---------------------------------------------------------------------------


def test_load_volume_reads_as_stored(tmp_path):
    data = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    affine = affine_from(np.diag([-1.4, 1.4, 8.0]), (1, 2, 3))
    vol = load_volume(save_nifti(tmp_path / "a.nii.gz", data, affine))
    assert vol.array.dtype == np.float32 and vol.array.shape == (5, 6, 7)
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine, affine)
    np.testing.assert_allclose(vol.spacing, (1.4, 1.4, 8.0), rtol=1e-6)
    # a 4D file holding one volume is squeezed
    vol4 = load_volume(save_nifti(tmp_path / "b.nii.gz", data[..., None], affine))
    assert vol4.array.shape == (5, 6, 7)


def test_load_volume_errors_name_the_file(tmp_path):
    affine = np.eye(4)
    with pytest.raises(UserError, match="missing.nii.gz: file not found"):
        load_volume(tmp_path / "missing.nii.gz")

    good = save_nifti(tmp_path / "trunc.nii.gz", np.random.default_rng(0).normal(size=(40, 40, 20)), affine,
                      dtype=np.float32)
    raw = good.read_bytes()
    good.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="trunc.nii.gz") as err:
        load_volume(good)
    assert "\n" not in str(err.value)

    (tmp_path / "junk.nii").write_bytes(b"not a nifti at all")
    with pytest.raises(UserError, match="junk.nii"):
        load_volume(tmp_path / "junk.nii")

    four_d = save_nifti(tmp_path / "cine.nii.gz", np.zeros((4, 5, 6, 30)), affine)
    with pytest.raises(UserError, match=r"cine.nii.gz: expected a 3D image, got 4D .*axis 3 has size 30"):
        load_volume(four_d)

    two_d = save_nifti(tmp_path / "flat.nii.gz", np.zeros((4, 5)), affine)
    with pytest.raises(UserError, match="flat.nii.gz: expected a 3D image"):
        load_volume(two_d)

    nan = np.zeros((4, 5, 6), np.float32)
    nan[1, 2, 3] = np.nan
    nan[0, 0, 0] = np.inf
    with pytest.raises(UserError, match="nan.nii.gz: 2 voxel"):
        load_volume(save_nifti(tmp_path / "nan.nii.gz", nan, affine, dtype=np.float32))


def test_load_label(tmp_path):
    lab = np.zeros((4, 5, 6), np.float32)
    lab[1:3, 1:3, 2] = 3
    vol = load_label(save_nifti(tmp_path / "gt.nii.gz", lab, np.eye(4), dtype=np.float32))
    assert np.issubdtype(vol.array.dtype, np.integer)
    np.testing.assert_array_equal(vol.array, lab.astype(int))
    vol16 = load_label(save_nifti(tmp_path / "gt16.nii.gz", lab, np.eye(4), dtype=np.int16))
    assert vol16.array.dtype == np.int16
    lab[0, 0, 0] = 0.5
    with pytest.raises(UserError, match="bad.nii.gz: label map has non-integer values"):
        load_label(save_nifti(tmp_path / "bad.nii.gz", lab, np.eye(4), dtype=np.float32))
