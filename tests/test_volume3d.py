"""3D volumes: masking and ensembling in the 3D step, the network grid and its exact inverse, patch
sampling, 3D networks, and the CLI end to end (train -> predict -> evaluate) with its one-line errors."""

from __future__ import annotations

import csv
import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import TINY_3D, tiny_recipe
from maskmatch_med.config import MethodConfig, ModelConfig, VolumeConfig, WeakAugConfig
from maskmatch_med.method.ema import make_teacher
from maskmatch_med.method.ensemble import multiscale_probabilities
from maskmatch_med.method.steps import Batch, ConsistencyStep, PseudoLabels, build_step
from maskmatch_med.models import build_model
from maskmatch_med.models3d import PadToMultiple, axis_divisors, dynunet_kernels
from maskmatch_med.scenarios.volumes.data import PatchSource
from maskmatch_med.scenarios.volumes.grid import from_network, network_grid, prepare_image, to_network
from maskmatch_med.scenarios.volumes.inference import axis_scales, predict_volume_3d


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _nifti(path, data, spacing, oblique=True, dtype=np.int16):
    """A NIfTI with anisotropic spacing and (optionally) an oblique, flipped, translated affine."""
    angle = np.deg2rad(25.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]) if oblique else np.eye(3)
    rotation = rotation @ np.diag([-1.0, 1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = (12.5, -40.0, 7.25)
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


# ------------------------------------------------------------------------------ masking, ensembling


def _pseudo(targets, valid):
    return PseudoLabels(targets, valid.float(), valid, torch.ones_like(valid), 4)


def _masking_step(ratio: float = 0.7) -> ConsistencyStep:
    method = MethodConfig(mask={"patch_size": [8, 8, 2], "ratio": ratio, "fill": 0.0})
    return build_step(method, WeakAugConfig(), 1)


def test_3d_masked_view_drops_whole_per_axis_patches_at_the_ratio():
    step = _masking_step()
    view = torch.randn(8, 1, 32, 32, 8) + 5.0  # never 0, so dropped voxels are exactly the zeros
    targets, valid = torch.zeros(8, 32, 32, 8, dtype=torch.long), torch.ones(8, 32, 32, 8, dtype=torch.bool)
    masked, masked_targets, _ = step.masked_view(view, targets, valid, view, _pseudo(targets, valid), _gen(1))
    dropped = masked[:, 0] == 0
    blocks = dropped.reshape(8, 4, 8, 4, 8, 4, 2).permute(0, 1, 3, 5, 2, 4, 6).reshape(8, 64, -1)
    assert torch.all(blocks.all(-1) | (~blocks).all(-1))  # (8, 8, 2) voxel patches, entirely in or out
    ratio = blocks[..., 0].float().mean().item()
    assert abs(ratio - 0.7) < 4 * (0.7 * 0.3 / blocks[..., 0].numel()) ** 0.5
    assert torch.equal(masked[~dropped[:, None]], view[~dropped[:, None]])  # visible voxels untouched
    assert masked_targets is targets  # the loss keeps the full pseudo-labels


def test_3d_masking_is_deterministic_with_a_seed():
    step = _masking_step(0.5)
    view = torch.randn(2, 1, 16, 16, 8)
    t, v = torch.zeros(2, 16, 16, 8, dtype=torch.long), torch.ones(2, 16, 16, 8, dtype=torch.bool)
    a = step.masked_view(view, t, v, view, _pseudo(t, v), _gen(7))[0]
    b = step.masked_view(view, t, v, view, _pseudo(t, v), _gen(7))[0]
    c = step.masked_view(view, t, v, view, _pseudo(t, v), _gen(8))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_3d_ensemble_identity_at_scale_one_and_per_axis_scales_keep_the_slice_axis():
    torch.manual_seed(0)
    net = build_model(ModelConfig(**TINY_3D["model"]), 3, 1, 3).eval()
    x = torch.randn(2, 1, 20, 20, 6)
    seen = []

    def predict(t):
        seen.append(tuple(t.shape[2:]))
        return net(t)

    with torch.no_grad():
        expected = torch.softmax(net(x), dim=1)
        assert torch.equal(multiscale_probabilities(predict, x, [1.0]), expected)
        assert torch.equal(multiscale_probabilities(predict, x, [[1.0, 1.0, 1.0]]), expected)
        seen.clear()
        probs = multiscale_probabilities(predict, x, [[0.75, 0.75, 1.0], [1.25, 1.25, 1.0]])
    # 15 x 15 is not a multiple of the network's (4, 4, 2): the 3D wrapper pads, no rounding needed
    assert seen == [(15, 15, 6), (25, 25, 6)]
    assert probs.shape == (2, 3, 20, 20, 6)
    assert torch.allclose(probs.sum(1), torch.ones(()), atol=1e-5)


@pytest.mark.parametrize("method", ["maskmatch", "unimatch", "bcp"])
def test_3d_training_step_on_patches(method):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY_3D["model"]), 3, 1, 4)
    options = {"name": "maskmatch", "mix": "bcp", "pseudo_label": {"threshold": "classwise"}} if method == "bcp" else {"name": method}
    config = MethodConfig(**{**TINY_3D["method"], **options, "conf_thresh": 0.0})
    step = build_step(config, WeakAugConfig(), 1)
    batch = Batch(torch.randn(2, 1, 16, 16, 4), torch.randint(0, 4, (2, 16, 16, 4)), torch.randn(2, 1, 16, 16, 4))
    out = step(model, make_teacher(model), batch, _gen(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert out.logs["valid_frac"] == 1.0 and ("loss_m" in out.logs) == (method != "unimatch")
    assert ("loss_bcp_out" in out.logs) == (method == "bcp")
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------ networks


def test_3d_networks_keep_any_input_size():
    for name in ("unet", "dynunet", "basicunet"):
        config = ModelConfig(**{**TINY_3D["model"], "name": name})
        model = build_model(config, 3, 1, 3).eval()
        assert isinstance(model, PadToMultiple)
        with torch.no_grad():
            assert model(torch.randn(1, 1, 13, 10, 3)).shape == (1, 3, 13, 10, 3)
    assert axis_divisors(ModelConfig(**TINY_3D["model"])) == (4, 4, 2)
    # thick slices: 1-wide kernels along the slice axis until it is first downsampled
    assert dynunet_kernels([[2, 2, 1], [2, 2, 2], [2, 2, 1]]) == [[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]]


# ------------------------------------------------------------------------------ grid, patches


def test_network_grid_puts_the_coarsest_axis_last_and_inverts_exactly():
    spacing = (0.9, 7.5, 1.3)  # the slice axis is the stored middle axis
    grid = network_grid((20, 6, 18), spacing, [0.45, 0.65, 3.75])
    assert grid.order == (0, 2, 1) and grid.shape == (40, 36, 12)
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, 4, (10, 3, 9)), np.ones((2, 2, 2))).astype(np.uint8)  # blocks of 2
    on_grid = to_network(labels.astype(np.float32), grid, label=True)[0].long()
    one_hot = torch.nn.functional.one_hot(on_grid, 4).permute(3, 0, 1, 2).float()
    back = from_network(one_hot, grid)
    assert back.shape == (4, 20, 6, 18)
    assert np.array_equal(back.argmax(0).numpy(), labels)
    # a non-integer resampling still returns exactly the stored shape
    odd = network_grid((21, 5, 17), spacing, [1.5, 1.5, 10.0])
    assert from_network(torch.rand(2, *odd.shape), odd).shape == (2, 21, 5, 17)


def test_intensity_normalisation_keys():
    array = np.linspace(-1000, 1000, 8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4)
    ct, _ = prepare_image(array, (1, 1, 1), VolumeConfig(intensity="ct_window", ct_window=(-100, 300)))
    assert ct.min() == -1.0 and ct.max() == 1.0 and torch.isclose(ct[0, 4, 4, 2], torch.tensor(-1.0 + 2 * (array[4, 4, 2] + 100) / 400))
    z, _ = prepare_image(array, (1, 1, 1), VolumeConfig(intensity="zscore"))
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std(unbiased=False)) - 1) < 1e-3
    p, _ = prepare_image(array, (1, 1, 1), VolumeConfig(intensity="percentile", percentiles=(10, 90)))
    assert abs(float(p.mean())) < 1e-4 and float(p.max()) < float(z.max())  # clipped before the z-score


def test_patches_balance_foreground_pad_small_volumes_and_repeat_with_a_seed():
    label = torch.zeros(40, 40, 8, dtype=torch.uint8)
    label[30:34, 5:9, 2:4] = 1  # a small structure far from the centre
    image = torch.randn(1, 40, 40, 8)
    source = PatchSource([image], [label], (16, 16, 4), pos=1.0, neg=0.0)
    for seed in range(10):
        images, labels = source.batch(torch.tensor([0, 0]), _gen(seed))
        assert images.shape == (2, 1, 16, 16, 4) and labels.shape == (2, 16, 16, 4)
        assert all(bool((patch == 1).any()) for patch in labels)  # pos only: every patch holds foreground
    a, b = source.batch(torch.tensor([0]), _gen(3)), source.batch(torch.tensor([0]), _gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    background = PatchSource([image], [label], (16, 16, 4), pos=0.0, neg=1.0).batch(torch.tensor([0] * 8), _gen(0))[1]
    assert (background == 0).float().mean() > 0.9

    from maskmatch_med.data.checks import LoadedCase
    from maskmatch_med.data.cases import Case
    from maskmatch_med.data.nifti import Volume
    from maskmatch_med.scenarios.volumes.data import build_patch_source

    small = np.ones((10, 7, 3), np.float32)
    small_label = Volume(np.ones((10, 7, 3), np.uint8), np.eye(4), (1.0, 1.0, 1.0), None)
    loaded = LoadedCase(Case("s", None), Volume(small, np.eye(4), (1.0, 1.0, 1.0), None), small_label)
    padded = build_patch_source([loaded], VolumeConfig(patch_size=[16, 16, 4]), True, torch.device("cpu"))
    images, labels = padded.batch(torch.tensor([0]), _gen(0))
    assert images.shape == (1, 1, 16, 16, 4) and int(labels.sum()) == 10 * 7 * 3  # padded, nothing lost


def test_predict_volume_smaller_than_the_window():
    model = build_model(ModelConfig(**TINY_3D["model"]), 3, 1, 3)
    config = VolumeConfig(**TINY_3D["volume"])
    array = np.random.default_rng(0).normal(size=(9, 7, 2)).astype(np.float32)
    scales = axis_scales([0.75, 1.0], config)
    assert scales == [(0.75, 0.75, 1.0), (1.0, 1.0, 1.0)]  # numbers scale in-plane only by default
    probs, uncertainty = predict_volume_3d(model, array, (6.0, 6.0, 10.0), config, scales, uncertainty=True)
    assert probs.shape == (3, 9, 7, 2) and uncertainty.shape == (9, 7, 2)
    assert torch.allclose(probs.sum(0), torch.ones(()), atol=1e-5)
    assert float(uncertainty.min()) >= 0 and float(uncertainty.max()) <= 1
    single, none = predict_volume_3d(model, array, (6.0, 6.0, 10.0), config, scales[1:], uncertainty=True)
    assert float(none.abs().max()) == 0.0  # one scale cannot disagree with itself


# ---------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def run3d(tmp_path_factory, phantom_root, tiny_manifest):
    """One tiny 3D MaskMatch run on the phantom, shared by the predict/evaluate tests."""
    from maskmatch_med.config import load_recipe
    from maskmatch_med.engine.trainer import train
    from maskmatch_med.scenarios.registry import VOLUMES

    work = tmp_path_factory.mktemp("run3d")
    recipe = tiny_recipe(work / "recipe.yaml", phantom_root, tiny_manifest, work / "out", **TINY_3D)
    result = train(load_recipe(recipe), VOLUMES, progress=False)
    return work / "out", result


def test_3d_train_predict_evaluate(run3d, phantom_root, run_cli, tmp_path):
    from maskmatch_med.scenarios.base import TrainedModel
    from maskmatch_med.scenarios.registry import VOLUMES, scenario_for

    run_dir, result = run3d
    payload = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert payload["spatial_dims"] == 3 and 0.0 <= result.best_score <= 1.0
    assert scenario_for(TrainedModel.load(run_dir / "checkpoints" / "best.pt", torch.device("cpu")).recipe) is VOLUMES
    assert "dice_mean" in (run_dir / "val_log.csv").read_text()
    patient = phantom_root / "patient001"
    code, out, err = run_cli("predict", "--checkpoint", run_dir / "checkpoints" / "best.pt", "--input", patient,
                             "--output", tmp_path / "pred", "--scales", "0.75,1.0", "--probabilities", "--uncertainty", "--png")
    assert code == 0, err
    images = sorted(p for p in patient.glob("*.nii.gz") if not p.name.endswith("_gt.nii.gz"))
    for image in images:
        source = nib.load(image)
        result = nib.load(tmp_path / "pred" / image.name)
        probs = nib.load(tmp_path / "pred" / "probabilities" / image.name)
        unc = nib.load(tmp_path / "pred" / "uncertainty" / image.name)
        assert result.shape == source.shape and probs.shape == (*source.shape, 4) and unc.shape == source.shape
        for written in (result, probs, unc):
            np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
        np.testing.assert_allclose(probs.get_fdata().sum(-1), 1.0, atol=1e-4)
        assert np.array_equal(np.asarray(result.dataobj), probs.get_fdata().argmax(-1))
        assert (tmp_path / "pred" / image.name.replace(".nii.gz", ".png")).is_file()
    code, out, err = run_cli("evaluate", "--pred", tmp_path / "pred", "--gt", phantom_root, "--output", tmp_path / "report.csv")
    assert code == 0, err
    assert f"{len(images)} cases evaluated" in out
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert {row["class"] for row in rows} >= {"RV", "Myo", "LV"}


def test_3d_predict_keeps_oblique_anisotropic_geometry(run3d, run_cli, tmp_path):
    run_dir, _ = run3d
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    src = _nifti(tmp_path / "in" / "oblique.nii.gz", rng.integers(0, 500, (30, 5, 26)), (1.7, 9.0, 1.4))
    code, out, err = run_cli("predict", "--checkpoint", run_dir / "checkpoints" / "best.pt", "--input", src, "--output", tmp_path / "out")
    assert code == 0, err
    source, result = nib.load(src), nib.load(tmp_path / "out" / "oblique.nii.gz")
    assert result.shape == source.shape and result.get_data_dtype() == np.uint8
    np.testing.assert_allclose(result.affine, source.affine, atol=1e-6)
    assert nib.aff2axcodes(result.affine) == nib.aff2axcodes(source.affine)
    assert result.header["qform_code"] == source.header["qform_code"] and result.header["sform_code"] == source.header["sform_code"]
    a, b = sitk.ReadImage(str(src)), sitk.ReadImage(str(tmp_path / "out" / "oblique.nii.gz"))
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-4)


def test_3d_predict_refuses_4d_input_naming_the_axis(run3d, run_cli, tmp_path):
    run_dir, _ = run3d
    (tmp_path / "in").mkdir()
    img = nib.Nifti1Image(np.zeros((12, 12, 4, 3), np.float32), np.eye(4))
    nib.save(img, str(tmp_path / "in" / "cine.nii.gz"))
    code, out, err = run_cli("predict", "--checkpoint", run_dir / "checkpoints" / "best.pt", "--input", tmp_path / "in", "--output", tmp_path / "out")
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cine.nii.gz" in errors[0] and "axis 3 has size 3" in errors[0]


def test_3d_predict_reads_every_input_before_writing_any(run3d, phantom_root, run_cli, tmp_path):
    """A corrupt volume after a good one: refused before the good one's label map is written."""
    run_dir, _ = run3d
    (tmp_path / "in").mkdir()
    image = sorted(p for p in (phantom_root / "patient001").glob("*.nii.gz") if not p.name.endswith("_gt.nii.gz"))[0]
    shutil.copy(image, tmp_path / "in" / "a.nii.gz")
    (tmp_path / "in" / "b.nii.gz").write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    code, _, err = run_cli("predict", "--checkpoint", run_dir / "checkpoints" / "best.pt", "--input", tmp_path / "in",
                           "--output", tmp_path / "out", "--probabilities")
    assert code == 2 and "Traceback" not in err
    assert err == f"error: {tmp_path / 'in' / 'b.nii.gz'}: cannot read the image data, the file may be truncated or corrupt" + err.split("corrupt", 1)[1]
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def _datalist(base, phantom_root, sections):
    entries = {}
    for number, section in sections:
        patient = phantom_root / f"patient{number:03d}"
        image = sorted(p for p in patient.glob("*.nii.gz") if not p.name.endswith("_gt.nii.gz"))[0]
        (base / "images").mkdir(parents=True, exist_ok=True)
        (base / "labels").mkdir(parents=True, exist_ok=True)
        shutil.copy(image, base / "images" / image.name)
        shutil.copy(image.with_name(image.name.replace(".nii.gz", "_gt.nii.gz")), base / "labels" / image.name)
        entry = {"image": f"images/{image.name}"}
        if section != "unlabeled":
            entry["label"] = f"labels/{image.name}"
        entries.setdefault(section, []).append(entry)
    (base / "datalist.json").write_text(json.dumps(entries))
    return base / "datalist.json"


def test_3d_datalist_with_ct_window_trains(tmp_path, phantom_root, run_cli):
    datalist = _datalist(tmp_path / "byod", phantom_root, [(3, "training"), (4, "unlabeled"), (2, "validation")])
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tmp_path, tmp_path / "out", **TINY_3D)
    code, out, err = run_cli("train", recipe, "--no-progress", "--set", "data.layout=datalist", "--set", f"data.datalist={datalist}",
                             "--set", "data.root=null", "--set", "volume.intensity=ct_window", "--set", "volume.ct_window=[0,400]",
                             "--set", "train.iterations=2")
    assert code == 0, err
    assert "1 labeled / 1 unlabeled volumes" in out


def test_3d_bad_datalists_and_recipes_are_one_line_errors(tmp_path, phantom_root, run_cli):
    datalist = _datalist(tmp_path / "byod", phantom_root, [(3, "training"), (4, "unlabeled")])
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tmp_path, tmp_path / "out", **TINY_3D)
    base = ["train", recipe, "--no-progress", "--set", "data.layout=datalist", "--set", "data.root=null"]
    code, _, err = run_cli(*base, "--set", f"data.datalist={datalist}")
    assert code == 2 and err.count("\n") == 1
    assert "datalist.json: section 'validation' is missing" in err

    outside = tmp_path / "byod" / "outside.json"
    content = json.loads(datalist.read_text())
    content["validation"] = [{"image": "../elsewhere.nii.gz", "label": content["training"][0]["label"]}]
    outside.write_text(json.dumps(content))
    code, _, err = run_cli(*base, "--set", f"data.datalist={outside}")
    assert code == 2 and err.count("\n") == 1 and "outside the datalist's directory" in err

    code, _, err = run_cli("train", recipe, "--no-progress", "--set", "volume.patch_size=[18,16,4]")
    assert code == 2 and err.count("\n") == 1 and "volume.patch_size: [18, 16, 4] must be a multiple of [4, 4, 2]" in err
    code, _, err = run_cli("train", recipe, "--no-progress", "--set", "method.ensemble.scales=[[1.0,1.0]]")
    assert code == 2 and "method.ensemble.scales" in err and "3 values" in err

    # check-data runs the same recipe checks as train, before any volume is read
    code, _, err = run_cli("check-data", recipe, "--set", "volume.patch_size=[18,16,4]")
    assert code == 2 and err.count("\n") == 1 and "volume.patch_size: [18, 16, 4] must be a multiple of [4, 4, 2]" in err
    code, _, err = run_cli("check-data", recipe, "--set", "data.layout=datalist", "--set", "data.root=null", "--set", f"data.datalist={datalist}")
    assert code == 2 and err.count("\n") == 1 and "datalist.json: section 'validation' is missing" in err
    complete = _datalist(tmp_path / "complete", phantom_root, [(3, "training"), (4, "unlabeled"), (2, "validation")])
    code, out, err = run_cli("check-data", recipe, "--set", "data.layout=datalist", "--set", "data.root=null", "--set", f"data.datalist={complete}")
    assert code == 0 and "readable and consistent" in out, err


def test_patches_keep_labels_on_their_voxels_after_permutation_and_resampling():
    """Image and label of a case go through the axis permutation and resampling separately; a
    labeled cube must stay where the bright cube is in every training patch (slice axis stored first)."""
    from maskmatch_med.data.cases import Case
    from maskmatch_med.data.checks import LoadedCase
    from maskmatch_med.data.nifti import Volume
    from maskmatch_med.scenarios.volumes.data import build_patch_source

    label = np.zeros((6, 50, 40), np.uint8)  # (slice, in-plane, in-plane): 8 mm slices, 1.5 mm pixels
    label[1:5, 20:34, 8:20] = 1
    image = np.where(label > 0, 500.0, 100.0).astype(np.float32) + np.random.default_rng(0).normal(0, 5, label.shape).astype(np.float32)
    spacing = (8.0, 1.5, 1.5)
    loaded = LoadedCase(Case("c", None), Volume(image, np.eye(4), spacing, None), Volume(label, np.eye(4), spacing, None))
    source = build_patch_source([loaded], VolumeConfig(spacing=[3.0, 3.0, 10.0], patch_size=[16, 16, 4]), True, torch.device("cpu"))
    images, labels = source.batch(torch.zeros(8, dtype=torch.long), _gen(0))
    inside, outside = images[:, 0][labels == 1], images[:, 0][(labels == 0) & (images[:, 0] != 0)]
    assert inside.numel() and inside.min() > outside.max() - 1.0 and inside.mean() > outside.mean() + 1.5


def test_shipped_3d_recipes_use_instance_norm_for_small_patch_batches():
    """BatchNorm running statistics from batches of 2 patches made the 3D demo's eval-mode network
    collapse between validations (validation Dice 0.28 -> 0.06 -> 0.31; on its own training volumes
    0.10 with running statistics, 0.48 with batch statistics); nnU-Net uses instance norm here too."""
    from pathlib import Path

    from maskmatch_med.config import load_recipe

    recipes = [p for p in sorted(Path("recipes").glob("*.yaml")) if "spatial_dims: 3" in p.read_text()]
    assert recipes
    for path in recipes:
        recipe = load_recipe(path)
        if recipe.train.batch_size <= 4:
            assert recipe.model.norm == "instance", f"{path}: model.norm batch with batches of {recipe.train.batch_size} patches"
