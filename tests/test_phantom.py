"""The synthetic ACDC phantom: layout, geometry, labels, determinism, styles (a few patients only)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from maskmatch_med.data.acdc import patient_frames, read_info_cfg
from maskmatch_med.data.phantom import GROUPS, PHANTOM_MARKER, STYLES, phantom_style, write_acdc_phantom
from maskmatch_med.data.phantom.acdc_layout import _affine_and_flip
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


# ----------------------------------------------------------------------------------------------
# Styles: vendor-like acquisition shifts of the same anatomy

STYLE_PATIENTS = 2


@pytest.fixture(scope="module")
def style_roots(phantom_root, tmp_path_factory) -> dict[str, Path]:
    """Seed 0 in every style; A is the module's style-less phantom (same seed)."""
    roots = {"A": phantom_root}
    for style in STYLES[1:]:
        roots[style] = tmp_path_factory.mktemp(f"style_{style}")
        write_acdc_phantom(roots[style], patients=STYLE_PATIENTS, seed=0, style=style)
    return roots


def _load(image_path: Path) -> tuple[nib.Nifti1Image, np.ndarray, np.ndarray]:
    image = nib.load(image_path)
    return image, np.asarray(image.dataobj).astype(np.float64), np.asarray(nib.load(_gt(image_path)).dataobj)


def _volumes_mm3(labels: np.ndarray, image: nib.Nifti1Image) -> dict[int, float]:
    voxel = float(np.prod(image.header.get_zooms()[:3]))
    return {c: float((labels == c).sum()) * voxel for c in (1, 2, 3)}


def _background_noise(pixels: np.ndarray, k: int = 12) -> float:
    """Rician noise sigma from the darkest image corner (air: Rayleigh, E[x^2] = 2 sigma^2)."""
    corners = [pixels[:k, :k], pixels[-k:, :k], pixels[:k, -k:], pixels[-k:, -k:]]
    return min(float(np.sqrt(np.mean(c**2) / 2.0)) for c in corners)


# Values of the phantom as written before styles existed (seed 0): style A must not drift.
PINNED_A = {
    "patient001": {
        "info": "ED: 1\nES: 11\nGroup: RV\nHeight: 158.6\nNbFrame: 30\nWeight: 100.6\n",
        "shape": (251, 217, 8),
        "zooms": (1.4565883874893188, 1.4565883874893188, 9.1643705368042),
        "frames": {1: ([8351, 4951, 3962], 200.83127857234655), 11: ([7007, 4342, 1753], 198.50397717884223)},
    },
    "patient002": {
        "info": "ED: 1\nES: 11\nGroup: RV\nHeight: 162.7\nNbFrame: 25\nWeight: 99.0\n",
        "shape": (238, 179, 10),
        "zooms": (1.3486286401748657, 1.3486286401748657, 8.558313369750977),
        "frames": {1: ([8763, 5378, 6460], 99.98370499037604), 11: ([6099, 4540, 2215], 97.85173700765222)},
    },
}


def test_style_a_is_the_default_and_unchanged(phantom_root, tmp_path):
    explicit = tmp_path / "explicit_a"
    write_acdc_phantom(explicit, patients=1, seed=0, style="A")
    for path in sorted((phantom_root / "patient001").iterdir()):
        assert (explicit / "patient001" / path.name).read_bytes() == path.read_bytes(), path.name
    # Pinned against the pre-style phantom (tolerances only for last-bit float differences
    # between machines; a change in what is drawn moves these by far more).
    for name, pinned in PINNED_A.items():
        patient_dir = phantom_root / name
        assert (patient_dir / "Info.cfg").read_text() == pinned["info"]
        for frame, (counts, mean) in pinned["frames"].items():
            image, pixels, labels = _load(patient_dir / f"{name}_frame{frame:02d}.nii.gz")
            assert image.shape == pinned["shape"]
            assert np.allclose(image.header.get_zooms(), pinned["zooms"], rtol=0, atol=1e-6)
            assert [int((labels == c).sum()) for c in (1, 2, 3)] == pytest.approx(counts, rel=2e-3)
            assert pixels.mean() == pytest.approx(mean, rel=1e-4)
            assert image.header["descrip"].tobytes().rstrip(b"\0") == PHANTOM_MARKER
            assert phantom_style(image.get_filename()) == "A"


def test_styles_keep_the_anatomy(style_roots):
    for k in range(1, STYLE_PATIENTS + 1):
        name = f"patient{k:03d}"
        reference_dir = style_roots["A"] / name
        info = (reference_dir / "Info.cfg").read_text()  # group, ED/ES, height, weight, frames
        reference = {}
        for phase, path in _frames(reference_dir).items():
            reference[phase] = _volumes_mm3(_load(path)[2], nib.load(path))
        for style in STYLES[1:]:
            patient_dir = style_roots[style] / name
            assert (patient_dir / "Info.cfg").read_text() == info, style
            names = [p.name for p in _frames(patient_dir).values()]
            assert names == [p.name for p in _frames(reference_dir).values()]
            for phase, path in _frames(patient_dir).items():
                image, _, labels = _load(path)
                volumes = _volumes_mm3(labels, image)
                mid = labels[:, :, labels.shape[2] // 2]
                assert {1, 2, 3} <= set(np.unique(mid).tolist()), (style, name, phase)
                # The same heart: LV volume in mm^3 close to style A's (ES is smaller, so the
                # slice sampling of the base weighs more there).
                tolerance = 0.08 if phase == "ED" else 0.2
                assert volumes[3] == pytest.approx(reference[phase][3], rel=tolerance), (style, name, phase)
                assert volumes[2] == pytest.approx(reference[phase][2], rel=0.2), (style, name, phase)
                assert volumes[1] == pytest.approx(reference[phase][1], rel=0.25), (style, name, phase)


# Per style: in-plane spacing, slice spacing, matrix, stored maximum, 99th percentile, background
# noise / blood, LV blood / myocardium on the mid slice (ranges with margin around the docstring's).
def _expect(sx, sz, n, max_value, p99, noise, contrast) -> dict:
    return {"sx": sx, "sz": sz, "n": n, "max": max_value, "p99": p99, "noise": noise, "contrast": contrast}


STYLE_EXPECTATIONS = {
    "A": _expect((1.2, 1.8), (5.0, 10.0), (150, 256), 32767, (100, 2000), (0.01, 0.08), (1.5, 5.0)),
    "B": _expect((0.9, 1.2), (6.0, 8.0), (240, 320), 4095, (1000, 4095), (0.0, 0.025), (2.8, 8.0)),
    "C": _expect((1.6, 2.2), (10.0, 12.0), (128, 192), 255, (100, 255), (0.07, 0.2), (1.0, 1.75)),
    "D": _expect((0.65, 0.9), (8.0, 10.0), (288, 384), 32767, (4096, 32767), (0.015, 0.07), (1.8, 5.0)),
}


def test_styles_differ_in_acquisition(style_roots):
    contrast = {}
    for style, expect in STYLE_EXPECTATIONS.items():
        for k in range(1, STYLE_PATIENTS + 1):
            patient_dir = style_roots[style] / f"patient{k:03d}"
            for phase, path in _frames(patient_dir).items():
                image, pixels, labels = _load(path)
                where = (style, patient_dir.name, phase)
                assert image.get_data_dtype() == np.int16 and phantom_style(path) == style, where
                assert phantom_style(_gt(path)) == style
                sx, sy, sz = (float(z) for z in image.header.get_zooms())
                assert expect["sx"][0] <= sx == sy <= expect["sx"][1], where
                assert expect["sz"][0] <= sz <= expect["sz"][1], where
                assert all(expect["n"][0] <= n <= expect["n"][1] for n in image.shape[:2]), where
                assert 0 <= pixels.min() and pixels.max() <= expect["max"], where
                assert expect["p99"][0] <= np.percentile(pixels, 99) <= expect["p99"][1], where
                blood = pixels[labels == 3].mean()
                assert expect["noise"][0] <= _background_noise(pixels) / blood <= expect["noise"][1], where
                mid = pixels[:, :, pixels.shape[2] // 2]
                mid_labels = labels[:, :, labels.shape[2] // 2]
                ratio = mid[mid_labels == 3].mean() / mid[mid_labels == 2].mean()
                assert expect["contrast"][0] <= ratio <= expect["contrast"][1], (*where, ratio)
                contrast[style, k, phase] = ratio
    # C is the weak-contrast style, B the strong one: for the same heart and phase.
    for k in range(1, STYLE_PATIENTS + 1):
        for phase in ("ED", "ES"):
            assert contrast["C", k, phase] < contrast["A", k, phase] < contrast["B", k, phase]


def test_styles_are_deterministic_and_independent_of_patient_count(style_roots, tmp_path):
    for style in ("C", "B"):
        again = tmp_path / style
        write_acdc_phantom(again, patients=1, seed=0, style=style.lower())  # case-insensitive
        for path in sorted((style_roots[style] / "patient001").iterdir()):
            assert (again / "patient001" / path.name).read_bytes() == path.read_bytes(), (style, path.name)
    other_seed = tmp_path / "seed1"
    write_acdc_phantom(other_seed, patients=1, seed=1, style="C")
    info = (other_seed / "patient001" / "Info.cfg").read_bytes()
    assert info != (style_roots["C"] / "patient001" / "Info.cfg").read_bytes()


@pytest.mark.parametrize("style", ["E", "", "AB", None, 1])
def test_rejects_unknown_style(tmp_path, style):
    with pytest.raises(UserError, match=r"--style: expected one of A, B, C, D"):
        write_acdc_phantom(tmp_path / "out", patients=1, seed=0, style=style)
    assert not (tmp_path / "out").exists()


def test_cli_style_option(run_cli, tmp_path):
    code, out, err = run_cli("synth", "acdc", "--out", tmp_path / "bad", "--patients", "1", "--style", "Z")
    assert code == 2 and out == "" and err.strip().count("\n") == 0
    assert "--style" in err and "A, B, C, D" in err and "Traceback" not in err
    code, out, err = run_cli("synth", "acdc", "--out", tmp_path / "c", "--patients", "1", "--style", "C")
    assert code == 0 and "style C" in out
    assert phantom_style(next((tmp_path / "c" / "patient001").glob("*_frame??.nii.gz"))) == "C"


def test_rewrite_in_another_style(tmp_path):
    write_acdc_phantom(tmp_path, patients=1, seed=2, style="C")
    write_acdc_phantom(tmp_path, patients=1, seed=2, style="A")  # styled files are phantom files too
    frames = sorted((tmp_path / "patient001").glob("*.nii.gz"))
    assert len(frames) == 4 and {phantom_style(p) for p in frames} == {"A"}
