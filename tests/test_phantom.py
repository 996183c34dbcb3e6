"""The synthetic ACDC phantom: layout, geometry, labels, determinism (a few patients only)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from maskmatch_med.data.acdc import patient_frames, read_info_cfg
from maskmatch_med.data.phantom import GROUPS, _affine_and_flip, write_acdc_phantom
from maskmatch_med.errors import UserError

PATIENTS = 3


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("acdc_phantom")
    dirs = write_acdc_phantom(root, patients=PATIENTS, seed=0)
    assert dirs == [root / f"patient{k:03d}" for k in range(1, PATIENTS + 1)]
    return root


def _frames(patient_dir: Path) -> dict[str, Path]:
    info = read_info_cfg(patient_dir / "Info.cfg")
    return {phase: patient_dir / f"{patient_dir.name}_frame{int(info[phase]):02d}.nii.gz" for phase in ("ED", "ES")}


def _gt(image_path: Path) -> Path:
    return image_path.with_name(image_path.name.replace(".nii.gz", "_gt.nii.gz"))


def test_layout_and_info_cfg(phantom_root):
    assert sorted(p.name for p in phantom_root.iterdir()) == [f"patient{k:03d}" for k in range(1, PATIENTS + 1)]
    for patient_dir in phantom_root.iterdir():
        names = sorted(p.name for p in patient_dir.iterdir())
        assert "Info.cfg" in names and len(names) == 5
        for name in names:
            if name != "Info.cfg":
                assert re.fullmatch(rf"{patient_dir.name}_frame\d\d(_gt)?\.nii\.gz", name), name
        info = read_info_cfg(patient_dir / "Info.cfg")
        assert list(info) == ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]
        ed, es, n_frames = int(info["ED"]), int(info["ES"]), int(info["NbFrame"])
        assert 1 <= ed < es <= n_frames and 8 <= es <= 15
        assert info["Group"] in GROUPS
        assert re.fullmatch(r"\d+\.\d", info["Height"]) and re.fullmatch(r"\d+\.\d", info["Weight"])
        for image in _frames(patient_dir).values():
            assert image.is_file() and _gt(image).is_file()
        # The project's ACDC reader finds the same two frames.
        assert [c.image for c in patient_frames(patient_dir)] == list(_frames(patient_dir).values())


def test_images_labels_and_geometry(phantom_root):
    for patient_dir in sorted(phantom_root.iterdir()):
        lv_volume = {}
        for phase, image_path in _frames(patient_dir).items():
            image, label = nib.load(image_path), nib.load(_gt(image_path))
            assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
            assert image.shape == label.shape and np.allclose(image.affine, label.affine)
            assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1
            nx, ny, nz = image.shape
            assert 150 <= nx <= 256 and 150 <= ny <= 256 and 6 <= nz <= 12
            sx, sy, sz = image.header.get_zooms()
            assert 1.2 <= sx <= 1.8 and 1.2 <= sy <= 1.8 and 5.0 <= sz <= 10.0

            pixels = np.asarray(image.dataobj)
            labels = np.asarray(label.dataobj)
            assert pixels.min() >= 0 and pixels.max() > 50
            assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3}
            mid = labels[:, :, nz // 2]
            assert {1, 2, 3} <= set(np.unique(mid).tolist()), (patient_dir.name, phase)
            # Labels sit on the image: blood pools are brighter than the myocardium around them.
            mid_pixels = pixels[:, :, nz // 2].astype(float)
            assert mid_pixels[mid == 3].mean() > 1.5 * mid_pixels[mid == 2].mean()
            assert mid_pixels[mid == 1].mean() > 1.5 * mid_pixels[mid == 2].mean()
            lv_volume[phase] = int((labels == 3).sum())
        assert lv_volume["ES"] < lv_volume["ED"]


def test_simpleitk_reads_the_same_geometry(phantom_root):
    lps = np.diag([-1.0, -1.0, 1.0])  # ITK's world frame is LPS, NIfTI's is RAS
    for patient_dir in sorted(phantom_root.iterdir()):
        image_path = _frames(patient_dir)["ED"]
        nib_image, itk_image = nib.load(image_path), sitk.ReadImage(str(image_path))
        spacing = np.array(itk_image.GetSpacing())
        assert np.allclose(spacing, nib_image.header.get_zooms(), atol=1e-4)
        direction = np.array(itk_image.GetDirection()).reshape(3, 3)
        assert np.allclose(direction @ np.diag(spacing), lps @ nib_image.affine[:3, :3], atol=1e-3)
        assert np.allclose(itk_image.GetOrigin(), lps @ nib_image.affine[:3, 3], atol=1e-3)
        assert np.array_equal(sitk.GetArrayFromImage(itk_image).T, np.asarray(nib_image.dataobj))


def test_affines_include_flipped_or_oblique(phantom_root):
    special = 0
    for patient_dir in phantom_root.iterdir():
        affine = nib.load(_frames(patient_dir)["ED"]).affine
        direction = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
        flipped = bool((np.diag(direction) < -0.5).any()) or np.linalg.det(direction) < 0
        oblique = not np.allclose(np.abs(direction), np.eye(3), atol=1e-4)
        special += flipped or oblique
        assert np.abs(affine[:3, 3]).max() > 0  # non-zero origin
    assert special >= 1


def test_flip_keeps_world_positions():
    rng = np.random.default_rng(0)
    patient = SimpleNamespace(
        rotation=np.linalg.qr(rng.normal(size=(3, 3)))[0],
        spacing=(1.5, 1.5, 8.0),
        origin=np.array([10.0, -20.0, 30.0]),
        shape=(5, 4, 3),
        flips=(True, False, True),
    )
    array = np.arange(60).reshape(5, 4, 3)
    unflipped = SimpleNamespace(**{**vars(patient), "flips": (False, False, False)})
    affine, (flipped,) = _affine_and_flip(patient, [array])
    reference, _ = _affine_and_flip(unflipped, [array])
    for index in [(0, 0, 0), (4, 3, 2), (1, 2, 0)]:
        value = array[index]
        new_index = np.argwhere(flipped == value)[0]
        world_before = reference @ np.array([*index, 1.0])
        world_after = affine @ np.array([*new_index, 1.0])
        assert np.allclose(world_before, world_after)


def test_deterministic_and_independent_of_patient_count(phantom_root, tmp_path):
    fewer = tmp_path / "fewer"
    write_acdc_phantom(fewer, patients=2, seed=0)
    for name in ("patient001", "patient002"):
        for path in sorted((phantom_root / name).iterdir()):
            assert (fewer / name / path.name).read_bytes() == path.read_bytes(), path.name

    other_seed = tmp_path / "seed1"
    write_acdc_phantom(other_seed, patients=1, seed=1)
    first = _frames(phantom_root / "patient001")["ED"].read_bytes()
    other = sorted((other_seed / "patient001").glob("*_frame??.nii.gz"))[0].read_bytes()
    assert first != other


@pytest.mark.parametrize("patients, seed", [(0, 0), (-1, 0), (2, -3), (1.5, 0)])
def test_rejects_bad_arguments(tmp_path, patients, seed):
    with pytest.raises(UserError):
        write_acdc_phantom(tmp_path, patients=patients, seed=seed)


def test_rewrite_replaces_old_frames_and_refuses_foreign_data(tmp_path):
    write_acdc_phantom(tmp_path, patients=1, seed=3)
    write_acdc_phantom(tmp_path, patients=1, seed=4)  # over an earlier phantom: allowed
    patient_dir = tmp_path / "patient001"
    assert sorted(p.name for p in patient_dir.glob("*.nii.gz")) == sorted(
        p.name for image in _frames(patient_dir).values() for p in (image, _gt(image))
    )

    foreign = patient_dir / "patient001_frame01.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), foreign)  # e.g. real ACDC data
    before = foreign.read_bytes()
    with pytest.raises(UserError, match="not a phantom file"):
        write_acdc_phantom(tmp_path, patients=1, seed=4)
    assert foreign.read_bytes() == before
