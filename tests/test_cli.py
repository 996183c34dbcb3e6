"""The CLI end to end on phantom data in the ACDC layout: synth, check-data, train, resume, predict,
evaluate, and the one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml

from conftest import tiny_recipe, train_interrupted_after


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, phantom_root, tiny_manifest):
    """One tiny MaskMatch run shared by the predict/evaluate tests."""
    from maskmatch_med.config import load_recipe
    from maskmatch_med.engine.trainer import train
    from maskmatch_med.scenarios.registry import SLICES

    work = tmp_path_factory.mktemp("run")
    recipe = tiny_recipe(work / "recipe.yaml", phantom_root, tiny_manifest, work / "out")
    train(load_recipe(recipe), SLICES, progress=False)
    return work / "out"


def test_synth_writes_acdc_layout(run_cli, tmp_path):
    code, out, err = run_cli("synth", "acdc", "--out", tmp_path / "acdc", "--patients", "2", "--seed", "1")
    assert code == 0, err
    patient = tmp_path / "acdc" / "patient002"
    assert (patient / "Info.cfg").is_file()
    frames = sorted(p.name for p in patient.glob("*.nii.gz"))
    assert len(frames) == 4 and sum(name.endswith("_gt.nii.gz") for name in frames) == 2


def test_check_data_passes_on_phantom(run_cli, tmp_path, phantom_root, tiny_manifest):
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out")
    code, out, err = run_cli("check-data", recipe)
    assert code == 0, err
    assert "labeled: 2 cases" in out and "unlabeled: 10 cases" in out and "validation: 2 cases" in out


def test_train_writes_run_directory(trained_run):
    assert (trained_run / "recipe.yaml").is_file()
    for name in ("last.pt", "best.pt"):
        assert (trained_run / "checkpoints" / name).is_file()
    rows = list(csv.DictReader(open(trained_run / "train_log.csv")))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert {"loss", "loss_x", "loss_s", "loss_m", "lr", "valid_frac"} <= set(rows[0])
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert float(rows[0]["lr"]) > float(rows[-1]["lr"])  # poly schedule
    val = list(csv.DictReader(open(trained_run / "val_log.csv")))
    assert [int(r["iteration"]) for r in val] == [2, 4]
    assert {"dice_RV", "dice_Myo", "dice_LV", "dice_mean"} <= set(val[0])
    records = [strict_json(line) for line in open(trained_run / "metrics.jsonl")]
    assert {r["kind"] for r in records} == {"train", "val"}
    assert any((trained_run / "tensorboard").iterdir())
    # No temporary files left behind by the atomic writes.
    assert not [p for p in trained_run.rglob("*.tmp")]


def strict_json(line: str) -> dict:
    """json.loads as jq and other JSON readers parse: NaN and Infinity are not JSON."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_checkpoint_contents_load_safely(trained_run):
    payload = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    assert payload["iteration"] == 4 and payload["num_classes"] == 4 and payload["spatial_dims"] == 2
    assert payload["teacher"] is not None and "optimizer" in payload and "rng" in payload
    assert "method:" in payload["recipe"]


def test_resume_matches_uninterrupted_run(tmp_path, phantom_root, tiny_manifest, run_cli, monkeypatch):
    """A run killed right after its iteration-2 checkpoint and resumed ends with the same weights as an
    uninterrupted 4-iteration run (same schedule, data order, augmentation and EMA)."""
    full = tiny_recipe(tmp_path / "full.yaml", phantom_root, tiny_manifest, tmp_path / "full")
    code, out, err = run_cli("train", full, "--no-progress")
    assert code == 0, err
    assert out.splitlines()[0].startswith("maskmatch: ") and "done in " in out and " min (the whole run); best validation" in out

    split = tiny_recipe(tmp_path / "split.yaml", phantom_root, tiny_manifest, tmp_path / "split")
    code, _, err = train_interrupted_after(run_cli, monkeypatch, split, 2)
    last = tmp_path / "split" / "checkpoints" / "last.pt"
    assert code == 130 and torch.load(last, weights_only=True)["iteration"] == 2
    # Ctrl-C says where the last checkpoint is and the exact command that continues the run.
    assert err.strip() == (
        f"interrupted after 2 of 4 iterations; the last checkpoint is {last} (iteration 2); "
        f"continue with `maskmatch-med train {tmp_path / 'split'} --resume`"
    )

    code, out, err = run_cli("train", tmp_path / "split", "--no-progress", "--resume")  # the command it printed
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"resuming {last} at iteration 2 of 4" and lines[1].startswith("maskmatch: ")
    assert " min (this part: iterations 3-4, resumed at 2); best validation" in lines[-1]
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    assert b["iteration"] == 4
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], msg=f"student {key}")
        torch.testing.assert_close(a["teacher"][key], b["teacher"][key], msg=f"teacher {key}")
    assert a["best_score"] == b["best_score"]


def test_existing_run_is_not_overwritten(trained_run, run_cli, tmp_path):
    before = (trained_run / "checkpoints" / "last.pt").read_bytes()
    code, _, err = run_cli("train", trained_run / "recipe.yaml", "--no-progress")
    assert code == 2 and "already holds a run" in err
    assert (trained_run / "checkpoints" / "last.pt").read_bytes() == before


@pytest.mark.parametrize("method", ["supervised", "fixmatch", "unimatch"])
def test_baselines_train(method, tmp_path, phantom_root, tiny_manifest, run_cli):
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out", method={"name": method})
    code, out, err = run_cli("train", recipe, "--no-progress", "--set", "train.iterations=2")
    assert code == 0, err
    header = open(tmp_path / "out" / "train_log.csv").readline()
    assert ("loss_s," in header) == (method == "fixmatch") and ("loss_fp" in header) == (method == "unimatch") and "loss_m" not in header


def test_predict_keeps_input_geometry(trained_run, phantom_root, run_cli, tmp_path):
    patient = phantom_root / "patient001"
    code, out, err = run_cli(
        "predict", "--checkpoint", trained_run / "checkpoints" / "best.pt", "--input", patient,
        "--output", tmp_path / "pred", "--png", "--scales", "0.75,1.0,1.25",
    )
    assert code == 0, err
    images = sorted(p for p in patient.glob("*.nii.gz") if not p.name.endswith("_gt.nii.gz"))
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz")) == [p.name for p in images]
    for image in images:
        source, result = nib.load(image), nib.load(tmp_path / "pred" / image.name)
        assert result.shape == source.shape
        np.testing.assert_allclose(result.affine, source.affine, atol=1e-5)
        assert nib.aff2axcodes(result.affine) == nib.aff2axcodes(source.affine)
        assert result.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(result.dataobj))) <= {0, 1, 2, 3}
        a, b = sitk.ReadImage(str(image)), sitk.ReadImage(str(tmp_path / "pred" / image.name))
        np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
        np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-4)
        assert (tmp_path / "pred" / image.name.replace(".nii.gz", ".png")).is_file()
    assert json.loads((tmp_path / "pred" / "labels.json").read_text()) == {"0": "background", "1": "RV", "2": "Myo", "3": "LV"}



def test_2d_checkpoint_writes_probabilities_and_uncertainty(trained_run, phantom_root, run_cli, tmp_path):
    """--probabilities and --uncertainty for 2D checkpoints too (issue 15): on each input's grid, in
    subfolders, with the labels the plain predict writes at the same scales."""
    from maskmatch_med.scenarios.base import TrainedModel
    from maskmatch_med.scenarios.registry import SLICES, scenario_for

    checkpoint = trained_run / "checkpoints" / "best.pt"
    assert scenario_for(TrainedModel.load(checkpoint, torch.device("cpu")).recipe) is SLICES
    patient = phantom_root / "patient001"
    args = ("predict", "--checkpoint", checkpoint, "--input", patient, "--scales", "0.75,1.0")
    code, _, err = run_cli(*args, "--output", tmp_path / "pred", "--probabilities", "--uncertainty")
    assert code == 0, err
    assert run_cli(*args, "--output", tmp_path / "plain")[0] == 0
    images = sorted(p for p in patient.glob("*.nii.gz") if not p.name.endswith("_gt.nii.gz"))
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz")) == [p.name for p in images]  # evaluate sees labels only
    for image in images:
        source = nib.load(image)
        result, probs, unc = (nib.load(tmp_path / "pred" / sub / image.name) for sub in ("", "probabilities", "uncertainty"))
        assert result.shape == source.shape and probs.shape == (*source.shape, 4) and unc.shape == source.shape
        assert probs.get_data_dtype() == np.float32 and unc.get_data_dtype() == np.float32
        for written in (result, probs, unc):
            np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
            assert written.header["qform_code"] == source.header["qform_code"] and written.header["sform_code"] == source.header["sform_code"]
        np.testing.assert_allclose(probs.get_fdata().sum(-1), 1.0, atol=1e-4)
        labels = np.asarray(result.dataobj)
        assert np.array_equal(labels, probs.get_fdata().argmax(-1))
        assert np.array_equal(labels, np.asarray(nib.load(tmp_path / "plain" / image.name).dataobj))
        spread = unc.get_fdata()
        assert spread.min() >= 0 and spread.max() <= 1 + 1e-6 and spread.max() > 0  # two scales disagree somewhere

def test_predict_png_montage_has_a_colour_legend(trained_run, phantom_root, run_cli, tmp_path):
    """Below the tiles, a strip with a swatch of each class's colour (RV red, Myo green, LV blue) and its name."""
    from skimage import io as skio

    from maskmatch_med.data.preprocess import slice_axis_of
    from maskmatch_med.engine.writers import LEGEND_PAD, LEGEND_ROW, LEGEND_SWATCH, montage_grid

    image = sorted(p for p in (phantom_root / "patient001").glob("*.nii.gz") if not p.name.endswith("_gt.nii.gz"))[0]
    code, _, err = run_cli("predict", "--checkpoint", trained_run / "checkpoints" / "best.pt", "--input", image,
                           "--output", tmp_path / "pred", "--png")
    assert code == 0, err
    pic = skio.imread(str(tmp_path / "pred" / image.name.replace(".nii.gz", ".png")))
    source = nib.load(image)
    axis = slice_axis_of(tuple(float(z) for z in source.header.get_zooms()[:3]))
    across, up = (source.shape[a] for a in range(3) if a != axis)
    rows, cols = montage_grid(min(12, source.shape[axis]))
    assert pic.shape == (rows * up + LEGEND_ROW + LEGEND_PAD, cols * across, 3)  # tiles, then one legend row
    strip = pic[rows * up :]
    for colour in ((230, 25, 75), (60, 180, 75), (0, 130, 200)):  # RV, Myo, LV
        assert np.all(strip == np.asarray(colour, np.uint8), axis=-1).sum() == LEGEND_SWATCH**2


def test_predict_draws_a_progress_bar_only_on_a_terminal(trained_run, phantom_root, run_cli, tmp_path, monkeypatch):
    """As train decides: a bar's redraws in a log file or a pipe are noise (predict drew one always)."""
    args = ("predict", "--checkpoint", trained_run / "checkpoints" / "best.pt", "--input", phantom_root / "patient001")
    code, _, err = run_cli(*args, "--output", tmp_path / "logged")  # stderr captured: not a terminal
    assert code == 0 and err == ""
    code, _, err = run_cli(*args, "--output", tmp_path / "asked", "--progress")
    assert code == 0 and "predict: 100%" in err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = run_cli(*args, "--output", tmp_path / "terminal")
    assert code == 0 and "predict: 100%" in err
    code, _, err = run_cli(*args, "--output", tmp_path / "declined", "--no-progress")
    assert code == 0 and err == ""


def test_evaluate_reports_per_case_and_class(trained_run, phantom_root, run_cli, tmp_path):
    assert run_cli("predict", "--checkpoint", trained_run / "checkpoints" / "best.pt",
                   "--input", phantom_root / "patient001", "--output", tmp_path / "pred")[0] == 0
    code, out, err = run_cli("evaluate", "--pred", tmp_path / "pred", "--gt", phantom_root, "--output", tmp_path / "report.csv")
    assert code == 0, err
    assert "2 cases evaluated" in out and "RV" in out and "HD95 (mm)" in out and "nan" not in out.lower()
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert {r["class"] for r in rows if r["case"].startswith("patient001")} == {"RV", "Myo", "LV"}


# ----------------------------------------------------------------------------- bad input: exit 2, one line


def copy_phantom(phantom_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "acdc"
    shutil.copytree(phantom_root, root)
    return root


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err
    assert all(any(f in line for line in lines) for f in fragments), err


def save_like(reference: Path, data: np.ndarray, path: Path, affine=None) -> None:
    image = nib.load(reference)
    header = image.header.copy()
    header.set_data_dtype(data.dtype)
    nib.save(nib.Nifti1Image(data, image.affine if affine is None else affine, header), path)


def test_bad_data_is_reported_per_file(tmp_path, phantom_root, tiny_manifest, run_cli):
    root = copy_phantom(phantom_root, tmp_path)
    p3, p5, p6, p7 = (root / f"patient00{i}" for i in (3, 5, 6, 7))
    # corrupt (truncated) image
    corrupt = next(p for p in p5.glob("*frame01.nii.gz"))
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    # label with a value >= num_classes
    gt = next(p3.glob("*frame01_gt.nii.gz"))
    data = np.asarray(nib.load(gt).dataobj).copy()
    data[0, 0, 0] = 7
    save_like(gt, data, gt)
    # NaN intensities
    image = next(p for p in p6.glob("*frame01.nii.gz"))
    values = nib.load(image).get_fdata().astype(np.float32)
    values[1, 1, 0] = np.nan
    save_like(image, values, image)
    # label of another shape than its image
    gt7 = next(p7.glob("*frame01_gt.nii.gz"))
    save_like(gt7, np.zeros((5, 5, 2), np.uint8), gt7)
    recipe = tiny_recipe(tmp_path / "r.yaml", root, tiny_manifest, tmp_path / "out")

    code, out, err = run_cli("check-data", recipe)
    assert code == 2 and "Traceback" not in err
    assert all(line.startswith("error: ") for line in err.strip().splitlines())  # one line per problem
    assert "3 data problems found" in err  # corrupt image, label value, NaN (patient007 is unlabeled)
    assert corrupt.name in err and "patient003_frame01_gt" in err and "outside 0..3" in err
    assert f"{image.name}" in err and "NaN" in err
    # Unlabeled frames carry no label path, so patient007's broken label is never read; labeled ones are.
    code, _, err = run_cli("train", recipe, "--no-progress")
    assert code == 2 and corrupt.name in err and not (tmp_path / "out" / "checkpoints").exists()


def test_label_shape_and_affine_mismatch(tmp_path, phantom_root, tiny_manifest, run_cli):
    root = copy_phantom(phantom_root, tmp_path)
    patient = root / "patient003"
    gt_a, gt_b = sorted(patient.glob("*_gt.nii.gz"))
    save_like(gt_a, np.zeros((5, 5, 2), np.uint8), gt_a)
    shifted = nib.load(gt_b).affine.copy()
    shifted[0, 3] += 5.0
    save_like(gt_b, np.asarray(nib.load(gt_b).dataobj), gt_b, affine=shifted)
    recipe = tiny_recipe(tmp_path / "r.yaml", root, tiny_manifest, tmp_path / "out")
    code, _, err = run_cli("check-data", recipe)
    assert code == 2
    assert f"{gt_a.name}: shape (5, 5, 2) differs" in err and f"{gt_b.name}: affine differs" in err


def test_missing_patient_and_empty_unlabeled_split(tmp_path, phantom_root, tiny_manifest, run_cli):
    root = copy_phantom(phantom_root, tmp_path)
    shutil.rmtree(root / "patient002")
    recipe = tiny_recipe(tmp_path / "r.yaml", root, tiny_manifest, tmp_path / "out")
    assert_one_line_error(*run_cli("check-data", recipe)[::2], "val.txt: patient002 not found")

    only = tmp_path / "only"
    for pid in ("patient001", "patient002", "patient003"):
        shutil.copytree(phantom_root / pid, only / pid)
    recipe = tiny_recipe(tmp_path / "r2.yaml", only, tiny_manifest, tmp_path / "out2")
    code, _, err = run_cli("train", recipe, "--no-progress")
    assert code == 2 and "split 'unlabeled' is empty" in err


def test_check_data_lists_every_layout_problem(tmp_path, phantom_root, tiny_manifest, run_cli):
    """A missing patient folder or Info.cfg used to stop check-data at the first one."""
    root = copy_phantom(phantom_root, tmp_path)
    shutil.rmtree(root / "patient002")  # the validation patient
    (root / "patient005" / "Info.cfg").unlink()
    (root / "patient006" / "Info.cfg").write_text("Group: NOR\n")
    recipe = tiny_recipe(tmp_path / "r.yaml", root, tiny_manifest, tmp_path / "out")
    code, out, err = run_cli("check-data", recipe)
    assert code == 2 and "Traceback" not in err
    assert err.splitlines() == [
        f"error: {tiny_manifest / 'val.txt'}: patient002 not found under {root}",
        f"error: {root / 'patient005' / 'Info.cfg'}: missing (needed for the ED/ES frame numbers)",
        f"error: {root / 'patient006' / 'Info.cfg'}: no valid 'ED: <frame>' line",
        "error: 3 data problems found; fix them (maskmatch-med check-data RECIPE) and run again",
    ]
    code, _, err = run_cli("train", recipe, "--no-progress")
    assert code == 2 and err.count("\n") == 4 and not (tmp_path / "out").exists()


def test_recipe_typo_and_wrong_type(tmp_path, phantom_root, tiny_manifest, run_cli):
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out")
    assert_one_line_error(*run_cli("train", recipe, "--set", "method.mask.ratoi=0.5")[::2], "method.mask.ratoi: unknown key")
    assert_one_line_error(*run_cli("train", recipe, "--set", "train.batch_size=big")[::2], "train.batch_size")
    assert not (tmp_path / "out").exists()


def test_set_iterations_wins_over_the_recipes_epochs(tmp_path, phantom_root, tiny_manifest, run_cli):
    """recipes/voc.yaml sets train.epochs, which used to replace an explicit --set train.iterations."""
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out",
                         train={"epochs": 50}, method={"warmup_iterations": 5})
    code, out, err = run_cli("train", recipe, "--no-progress", "--set", "train.iterations=2")
    assert code == 0, err
    assert [int(r["iteration"]) for r in csv.DictReader(open(tmp_path / "out" / "train_log.csv"))] == [1, 2]
    saved = yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())["train"]
    assert (saved["iterations"], saved["epochs"]) == (2, None)
    # The recipe's warm-up, sized for its own budget, now covers the whole run: said, not hidden.
    assert "note: method.warmup_iterations=5 covers all train.iterations=2, so this run trains the supervised loss only" in out


def test_conflicting_or_ignored_overrides_are_refused(tmp_path, phantom_root, tiny_manifest, run_cli):
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "out", train={"epochs": 50})
    code, _, err = run_cli("train", recipe, "--set", "train.iterations=2", "--set", "train.epochs=3")
    assert_one_line_error(code, err, "--set train.iterations=2 and --set train.epochs=3 conflict", "give only one of them")
    source = {"layout": "acdc", "root": str(phantom_root), "manifest": str(tiny_manifest)}
    adaptation = tiny_recipe(tmp_path / "da.yaml", phantom_root, tiny_manifest, tmp_path / "out", data={"labeled": source, "unlabeled": source})
    code, _, err = run_cli("check-data", adaptation, "--set", "data.num_labeled=2")
    assert_one_line_error(code, err, "--set data.num_labeled=2: this domain-adaptation recipe", "set data.labeled.num_labeled instead")
    code, _, err = run_cli("train", adaptation, "--set", f"data.root={tmp_path}")
    assert_one_line_error(code, err, "replace data.root; set data.labeled.root or data.unlabeled.root instead")
    code, _, err = run_cli("check-data", "recipes/voc.yaml", "--set", "data.num_labeled=92")
    assert_one_line_error(code, err, "--set data.num_labeled=92: layout voc takes its labeled images from data.splits",
                          "maskmatch-med manifest voc --root ROOT --labeled N --out DIR")
    assert not (tmp_path / "out").exists()


def test_checkpoint_from_another_model_or_not_a_checkpoint(trained_run, tmp_path, phantom_root, tiny_manifest, run_cli):
    other = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "other", model={"channels": [8, 16, 32]})
    shutil.copytree(trained_run / "checkpoints", tmp_path / "other" / "checkpoints")
    assert_one_line_error(*run_cli("train", other, "--resume", "--no-progress")[::2], "last.pt", "do not fit")

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x04not a checkpoint")  # a pickle stream's first bytes, then nonsense
    assert_one_line_error(*run_cli("predict", "--checkpoint", junk, "--input", phantom_root / "patient001", "--output", tmp_path / "p")[::2],
                          "junk.pt: not a readable checkpoint: not a PyTorch checkpoint file")
    assert not (tmp_path / "p").exists()


class RunsCode:
    """Unpickling this calls os.system: what weights_only loading exists to refuse."""

    def __reduce__(self):
        import os

        return (os.system, ("echo unsafe",))


@pytest.mark.parametrize("payload, named", [({"model": object()}, "(object)"), ({"model": RunsCode()}, "system)")])
def test_unsafe_checkpoint_is_refused_without_inviting_unsafe_loading(payload, named, tmp_path, phantom_root, run_cli):
    """Part 5 of issue 14: say what was refused and why, never PyTorch's advice to turn the check off."""
    pickled = tmp_path / "pickled.pt"
    torch.save(payload, pickled)
    code, out, err = run_cli("predict", "--checkpoint", pickled, "--input", phantom_root / "patient001", "--output", tmp_path / "p")
    assert_one_line_error(code, err, f"{pickled}: refused: it holds pickled Python objects (", "which could run code when loaded")
    assert named in err and "weights_only" not in err and "False" not in err and len(err.strip().splitlines()) == 1
    assert "unsafe" not in out and not (tmp_path / "p").exists()


@pytest.mark.parametrize("text", ["epoch,loss\n1,0.5\n", "data:\n  root: demo_data/acdc\n", "hello\n"])
def test_text_file_as_checkpoint_says_it_is_not_one(text, tmp_path, phantom_root, run_cli):
    """A recipe, a CSV log or any text given as --checkpoint (it once said 'pop from empty list')."""
    fake = tmp_path / "best.pt"
    fake.write_text(text)
    code, _, err = run_cli("predict", "--checkpoint", fake, "--input", phantom_root / "patient001", "--output", tmp_path / "p")
    assert_one_line_error(code, err, f"{fake}: not a checkpoint: it is a text file", "RUN/checkpoints/best.pt")
    assert not (tmp_path / "p").exists()
    fake.write_bytes(b"")
    code, _, err = run_cli("predict", "--checkpoint", fake, "--input", phantom_root / "patient001", "--output", tmp_path / "p")
    assert_one_line_error(code, err, f"{fake}: not a checkpoint: the file is empty")


def test_predict_reads_every_input_before_writing_any(trained_run, tmp_path, phantom_root, run_cli):
    """Good files followed by bad ones used to leave the good ones' label maps and no labels.json."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    images = sorted(p for p in (phantom_root / "patient001").glob("*.nii.gz") if not p.name.endswith("_gt.nii.gz"))
    for image in images:
        shutil.copy(image, inputs / image.name)
    truncated = inputs / "zz_truncated.nii.gz"  # sorts after the good ones; its header still reads
    truncated.write_bytes(images[0].read_bytes()[: images[0].stat().st_size // 2])
    flat = inputs / "zz_flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), flat)
    code, _, err = run_cli("predict", "--checkpoint", trained_run / "checkpoints" / "best.pt", "--input", inputs,
                           "--output", tmp_path / "pred")
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines) and len(lines) == 3, err  # one line per bad file
    assert f"{flat}: expected a 3D image" in lines[0]
    assert f"{truncated}: cannot read the image data, the file may be truncated or corrupt" in lines[1]
    assert lines[2] == "error: 2 of 4 inputs cannot be read; nothing was written"
    assert not (tmp_path / "pred").exists()


def test_predict_refuses_a_label_map_named_as_input(trained_run, tmp_path, phantom_root, run_cli):
    """A directory's *_gt files are skipped; one named explicitly was segmented as if it were an image."""
    label = sorted((phantom_root / "patient001").glob("*_gt.nii.gz"))[0]
    image = label.name.replace("_gt.nii.gz", ".nii.gz")
    code, _, err = run_cli("predict", "--checkpoint", trained_run / "checkpoints" / "best.pt",
                           "--input", label.with_name(image), "--input", label, "--output", tmp_path / "pred")
    assert_one_line_error(code, err, f"{label}: a label map (named *_gt), not an image; give --input the image ({image})")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "pred").exists()


def test_output_directory_equal_to_input(trained_run, tmp_path, phantom_root, run_cli):
    root = copy_phantom(phantom_root, tmp_path)
    before = sorted(p.name for p in (root / "patient001").iterdir())
    code, _, err = run_cli("predict", "--checkpoint", trained_run / "checkpoints" / "best.pt",
                           "--input", root / "patient001", "--output", root / "patient001")
    assert_one_line_error(code, err, "patient001")
    assert sorted(p.name for p in (root / "patient001").iterdir()) == before


def test_output_that_is_a_file_is_one_line(trained_run, tmp_path, phantom_root, tiny_manifest, run_cli):
    """--output / --out naming a file (or a path under one) used to be a FileExistsError traceback."""
    taken = tmp_path / "taken"
    taken.write_text("keep me\n")
    checkpoint = trained_run / "checkpoints" / "best.pt"
    for output in (taken, taken / "sub"):
        code, _, err = run_cli("predict", "--checkpoint", checkpoint, "--input", phantom_root / "patient001", "--output", output)
        assert_one_line_error(code, err, f"--output: {output}", "not a directory")
        code, _, err = run_cli("synth", "acdc", "--out", output, "--patients", "1")
        assert_one_line_error(code, err, f"--out: {output}", "not a directory")
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tiny_manifest, tmp_path / "unused")
    code, _, err = run_cli("train", recipe, "--no-progress", "--output", taken)
    assert_one_line_error(code, err, f"output_dir (--output): {taken} is a file, not a directory")
    assert taken.read_text() == "keep me\n" and sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml", "taken"]


def test_predict_device_errors_name_the_option(trained_run, tmp_path, phantom_root, run_cli, monkeypatch):
    args = ("predict", "--checkpoint", trained_run / "checkpoints" / "best.pt", "--input", phantom_root / "patient001", "--output", tmp_path / "p")
    code, _, err = run_cli(*args, "--device", "gpu0")
    assert_one_line_error(code, err, "--device: 'gpu0' is not a device; use cpu, cuda, cuda:N or auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run_cli(*args, "--device", "cuda")
    assert_one_line_error(code, err, "--device: cuda requested but no CUDA device is available")
    assert "train.device" not in err and not (tmp_path / "p").exists()


def test_missing_demo_data_says_how_to_make_it(tmp_path, tiny_manifest, run_cli):
    """`train recipes/demo.yaml` before `synth`: the first thing a newcomer may meet."""
    recipe = tiny_recipe(tmp_path / "r.yaml", tmp_path / "demo_data" / "acdc", tiny_manifest, tmp_path / "out")
    code, _, err = run_cli("train", recipe, "--no-progress")
    assert_one_line_error(code, err, f"data.root: {tmp_path / 'demo_data' / 'acdc'} does not exist",
                          f"`maskmatch-med synth acdc --out {tmp_path / 'demo_data' / 'acdc'} --patients 30`", "`make demo`")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "command, usage",
    [((), "maskmatch-med [OPTIONS] COMMAND [ARGS]..."), (("train",), "maskmatch-med train [OPTIONS] RECIPE"),
     (("check-data",), "maskmatch-med check-data [OPTIONS] RECIPE"), (("predict",), "maskmatch-med predict [OPTIONS]"),
     (("evaluate",), "maskmatch-med evaluate [OPTIONS]"), (("compare",), "maskmatch-med compare [OPTIONS] NAME=REPORT.csv..."),
     (("synth",), "maskmatch-med synth [OPTIONS] DATASET"), (("manifest",), "maskmatch-med manifest [OPTIONS] DATASET")],
)
def test_help_names_arguments_and_values_plainly(command, usage, run_cli):
    """--help printed `<bool>` beside every flag and `{recipe}` in the usage line (typer 0.2x's rendering)."""
    code, out, err = run_cli(*command, "--help")
    assert code == 0, err
    assert usage in out and "{" not in out and "<bool>" not in out
    rows = {}  # option -> the words of its help row, table borders and required marks left out
    for line in out.splitlines():
        words = [word for word in line.split() if word not in ("│", "*")]
        if words and words[0].startswith("--"):
            rows[words[0]] = words
    assert rows["--help"][1:3] == ["Show", "this"]  # nothing between a flag and its help
    expected = {"train": {"--set": "KEY=VALUE", "--output": "DIR", "--resume": "Continue"},
                "predict": {"--checkpoint": "FILE", "--input": "PATH", "--device": "DEVICE", "--png": "Also"},
                "evaluate": {"--pred": "DIR", "--class-names": "NAME,NAME,..."}}.get(command[0] if command else "", {})
    for option, word in expected.items():
        assert rows[option][1] == word, rows[option]


def test_readme_cites_only_documents_in_the_repository():
    """The README sent readers to DESIGN.md, which is not in the repository; a bare name (quality.md)
    must exist somewhere in it, a path where it says."""
    repo = Path(__file__).resolve().parents[1]
    cited = set(re.findall(r"[\w./-]+\.md\b", (repo / "README.md").read_text()))
    documents = [path.relative_to(repo) for path in repo.rglob("*.md") if ".git" not in path.parts]
    found = lambda name: Path(name) in documents if "/" in name else any(d.name == name for d in documents)
    missing = [name for name in sorted(cited) if not found(name)]
    assert cited and not missing, missing


def test_console_script_and_module_entry_points(tmp_path):
    """`python -m maskmatch_med` works (torchrun launches it that way) and errors exit 2 without a traceback."""
    result = subprocess.run([sys.executable, "-m", "maskmatch_med", "train", str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'missing.yaml'}: recipe not found"
    script = Path(sys.executable).parent / "maskmatch-med"
    if script.exists():
        result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
        assert result.returncode == 0 and "predict" in result.stdout


def test_train_from_monai_datalist(tmp_path, phantom_root, run_cli):
    """Bring-your-own data: a Decathlon-style datalist JSON instead of the ACDC layout."""
    base = tmp_path / "byod"
    entries = {"training": [], "unlabeled": [], "validation": [], "test": []}
    for number, section in ((3, "training"), (4, "unlabeled"), (5, "unlabeled"), (2, "validation"), (1, "test")):
        patient = phantom_root / f"patient{number:03d}"
        for image in sorted(p for p in patient.glob("*.nii.gz") if not p.name.endswith("_gt.nii.gz")):
            label = image.with_name(image.name.replace(".nii.gz", "_gt.nii.gz"))
            (base / "images").mkdir(parents=True, exist_ok=True)
            (base / "labels").mkdir(parents=True, exist_ok=True)
            shutil.copy(image, base / "images" / image.name)
            shutil.copy(label, base / "labels" / image.name)
            entry = {"image": f"images/{image.name}"}
            if section != "unlabeled":
                entry["label"] = f"labels/{image.name}"
            entries[section].append(entry)
    (base / "datalist.json").write_text(json.dumps(entries))
    recipe = tiny_recipe(tmp_path / "r.yaml", phantom_root, tmp_path, tmp_path / "out",
                         data={"layout": "datalist", "datalist": str(base / "datalist.json"), "root": None, "num_labeled": "all"})
    code, out, err = run_cli("check-data", recipe)
    assert code == 0, err
    assert "labeled: 2 cases" in out and "unlabeled: 4 cases" in out and "test: 2 cases" in out
    code, out, err = run_cli("train", recipe, "--no-progress", "--set", "train.iterations=2")
    assert code == 0, err
    assert (tmp_path / "out" / "checkpoints" / "best.pt").is_file()
