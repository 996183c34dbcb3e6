"""Domain adaptation: sources -> per-domain splits, per-domain validation metrics, per-domain evaluation,
the M&Ms reader on a fake tree in the real layout, and da_demo.yaml through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from maskmatch_med.config import Recipe, load_recipe
from maskmatch_med.data.cases import Splits
from maskmatch_med.data.checks import check_splits, require_clean
from maskmatch_med.data.mnms import mnms_cases
from maskmatch_med.data.phantom import write_acdc_phantom
from maskmatch_med.data.splits import resolve_splits
from maskmatch_med.errors import UserError
from maskmatch_med.evaluation.evaluate import evaluate_folders, format_domain_table

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def two_styles(tmp_path_factory) -> Path:
    """Source: style A patients 1-5; target: style C patients 31-35 (other anatomy, other names)."""
    root = tmp_path_factory.mktemp("da")
    write_acdc_phantom(root / "A", patients=5, seed=0)
    write_acdc_phantom(root / "C", patients=5, seed=0, style="C", first=31)
    lists = {
        "mA": {"val.txt": ["patient002"], "test.txt": ["patient001"], "labeled_order.txt": ["patient003"]},
        "mC": {"val.txt": ["patient032"], "test.txt": ["patient031"]},
    }
    for folder, files in lists.items():
        (root / folder).mkdir()
        for name, ids in files.items():
            (root / folder / name).write_text("".join(f"{i}\n" for i in ids))
    return root


def da_sections(root: Path, **labeled) -> dict:
    return {
        "labeled": {"layout": "acdc", "root": str(root / "A"), "manifest": str(root / "mA"), **labeled},
        "unlabeled": {"layout": "acdc", "root": str(root / "C"), "manifest": str(root / "mC")},
    }


def nifti(path: Path, array: np.ndarray, zooms=(1.5, 1.5, 8.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, np.diag([*zooms, 1.0]))
    image.header.set_zooms(tuple(zooms) + (1.0,) * (array.ndim - 3))
    nib.save(image, str(path))
    return path


# ----------------------------------------------------------------------------------------------- splits


def test_domain_splits_take_labeled_and_unlabeled_from_their_sources(two_styles):
    data = Recipe.model_validate({"data": da_sections(two_styles)}).data
    splits = resolve_splits(data)
    groups = lambda cases: sorted({c.group for c in cases})
    # Source: every training patient (3, 4, 5) labeled, none of its cases unlabeled.
    assert groups(splits.labeled) == ["patient003", "patient004", "patient005"]
    assert all(c.label is not None and c.domain == "source" for c in splits.labeled)
    # Target: all 3 training patients unlabeled, labels dropped although they exist on disk.
    assert groups(splits.unlabeled) == ["patient033", "patient034", "patient035"]
    assert all(c.label is None and c.domain == "target" for c in splits.unlabeled)
    assert [(c.group, c.domain) for c in splits.validation][::2] == [("patient002", "source"), ("patient032", "target")]
    assert [(c.group, c.domain) for c in splits.test][::2] == [("patient001", "source"), ("patient031", "target")]
    assert splits.domain_roles == {"source": "source", "target": "target"}
    # num_labeled applies to the labeled source's order.
    limited = resolve_splits(Recipe.model_validate({"data": da_sections(two_styles, num_labeled=1)}).data)
    assert groups(limited.labeled) == ["patient003"] and groups(limited.unlabeled) == groups(splits.unlabeled)


def test_datalist_target_is_unlabeled_with_its_own_domain(two_styles, tmp_path):
    content = {
        "training": [{"image": "patient033/patient033_frame01.nii.gz", "label": "patient033/patient033_frame01_gt.nii.gz"}],
        "unlabeled": [{"image": "patient034/patient034_frame01.nii.gz"}],
        "validation": [{"image": "patient032/patient032_frame01.nii.gz", "label": "patient032/patient032_frame01_gt.nii.gz"}],
    }
    datalist = two_styles / "C" / "target.json"
    datalist.write_text(json.dumps(content))
    sections = da_sections(two_styles)
    sections["unlabeled"] = {"layout": "datalist", "datalist": str(datalist), "domain": "scannerC"}
    splits = resolve_splits(Recipe.model_validate({"data": sections}).data)
    assert [(c.case_id, c.label, c.domain) for c in splits.unlabeled] == [
        ("patient033_frame01", None, "scannerC"), ("patient034_frame01", None, "scannerC")]
    assert [c.domain for c in splits.validation] == ["source", "source", "scannerC"]
    assert splits.domain_roles == {"source": "source", "scannerC": "target"}


def test_check_data_lists_each_domain(two_styles, run_cli):
    sets = [f"data.labeled.root={two_styles / 'A'}", f"data.labeled.manifest={two_styles / 'mA'}",
            f"data.unlabeled.root={two_styles / 'C'}", f"data.unlabeled.manifest={two_styles / 'mC'}"]
    code, out, err = run_cli("check-data", REPO / "recipes" / "da_demo.yaml", *[a for s in sets for a in ("--set", s)])
    assert code == 0, err
    assert "domain source (source): 6 labeled, 0 unlabeled, 2 validation, 2 test" in out
    assert "domain target (target): 0 labeled, 6 unlabeled, 2 validation, 2 test" in out


def test_check_data_lists_every_target_layout_problem(two_styles, tmp_path, run_cli):
    """An ACDC-layout target lists every missing patient and Info.cfg, as a plain ACDC recipe does."""
    import shutil

    target = tmp_path / "C"
    shutil.copytree(two_styles / "C", target)
    shutil.rmtree(target / "patient031")  # its test patient
    (target / "patient034" / "Info.cfg").unlink()
    sets = [f"data.labeled.root={two_styles / 'A'}", f"data.labeled.manifest={two_styles / 'mA'}",
            f"data.unlabeled.root={target}", f"data.unlabeled.manifest={two_styles / 'mC'}"]
    code, _, err = run_cli("check-data", REPO / "recipes" / "da_demo.yaml", *[a for s in sets for a in ("--set", s)])
    assert code == 2 and err.splitlines() == [
        f"error: {two_styles / 'mC' / 'test.txt'}: patient031 not found under {target}",
        f"error: {target / 'patient034' / 'Info.cfg'}: missing (needed for the ED/ES frame numbers)",
        "error: 2 data problems found; fix them (maskmatch-med check-data RECIPE) and run again",
    ]


def test_domain_split_errors_name_the_key(two_styles):
    with pytest.raises(UserError, match="needs both data.labeled and data.unlabeled"):
        load_recipe_from({"data": {"labeled": da_sections(two_styles)["labeled"]}}, two_styles)
    with pytest.raises(UserError, match=r"data.unlabeled: manifest is required for layout 'acdc'"):
        load_recipe_from({"data": {**da_sections(two_styles), "unlabeled": {"layout": "acdc", "root": "x"}}}, two_styles)
    with pytest.raises(UserError, match=r"data.unlabeled.layout: Input should be"):
        load_recipe_from({"data": {**da_sections(two_styles), "unlabeled": {"layout": "voc"}}}, two_styles)
    # The same phantom on both sides: same case names.
    same = da_sections(two_styles)
    same["unlabeled"] = {**same["labeled"], "domain": "target"}
    with pytest.raises(UserError, match=r"case patient00\d_frame\d\d is in data.labeled .* and in data.unlabeled .*case names must differ"):
        resolve_splits(Recipe.model_validate({"data": same}).data)
    swapped = da_sections(two_styles)
    swapped["labeled"]["domain"] = "target"
    with pytest.raises(UserError, match="domain 'target' also names cases of the other side"):
        resolve_splits(Recipe.model_validate({"data": swapped}).data)


def load_recipe_from(content: dict, where: Path):
    path = where / "recipe_under_test.yaml"
    path.write_text(yaml.safe_dump(content))
    return load_recipe(path)


def test_single_source_recipes_are_unchanged():
    for name in ("demo.yaml", "acdc.yaml"):
        recipe = load_recipe(REPO / "recipes" / name)
        assert not recipe.data.domain_adaptation and recipe.data.labeled is None


def test_shipped_da_recipes_parse():
    demo = load_recipe(REPO / "recipes" / "da_demo.yaml")
    assert demo.data.labeled.layout == "acdc" and demo.data.unlabeled.root == Path("demo_data/acdc_style_c")
    mnms = load_recipe(REPO / "recipes" / "acdc_to_mnms.yaml")
    assert mnms.data.unlabeled.layout == "mnms" and mnms.data.unlabeled.domain is None


# ----------------------------------------------------------------------------------------------- validation


def test_validator_reports_each_side_and_domain_and_selects_on_target(monkeypatch):
    from maskmatch_med.data.cases import Case
    from maskmatch_med.data.checks import LoadedCase
    from maskmatch_med.scenarios.slices.validation import DomainSliceVolumeValidator

    recipe = Recipe.model_validate({"data": {"root": "x"}})
    domains = ["source", "A", "B", "B"]
    cases = [LoadedCase(Case(f"c{i}", Path(f"c{i}.nii.gz"), domain=d), None, None) for i, d in enumerate(domains)]
    roles = {"source": "source", "A": "target", "B": "target"}
    validator = DomainSliceVolumeValidator(cases, recipe, None, 1, roles)
    dice = [np.array([0.9, 0.8, 0.7]), np.array([0.3, 0.3, 0.3]), np.array([0.5, 0.5, np.nan]), np.array([0.7, 0.7, 0.7])]
    monkeypatch.setattr(validator, "score_cases", lambda model: (dice, []))
    metrics, _ = validator(None)
    assert validator.score_key == "dice_mean/target"
    assert metrics["dice_mean/source"] == pytest.approx(0.8)
    assert metrics["dice_RV/target"] == pytest.approx(0.5) and metrics["dice_LV/target"] == pytest.approx(0.5)
    assert metrics["dice_mean/A"] == pytest.approx(0.3)
    assert metrics["dice_LV/B"] == pytest.approx(0.7)  # the NaN (class absent from both maps) is skipped
    assert metrics["dice_mean"] == pytest.approx(np.mean([0.6, 0.575, 0.5666667]), abs=1e-6)
    assert "dice_mean/source" in metrics and not any(k.endswith("/target/A") for k in metrics)
    # No labeled target validation case: selection falls back to the source's validation Dice.
    assert DomainSliceVolumeValidator(cases[:1], recipe, None, 1, roles).score_key == "dice_mean/source"


# ----------------------------------------------------------------------------------------------- evaluate


def test_evaluate_per_domain(tmp_path, run_cli):
    gt = np.zeros((8, 8, 2), np.uint8)
    gt[2:6, 2:6, :] = 1
    half = gt.copy()
    half[2:4, 2:6, :] = 0  # Dice 2*16/(32+16) = 2/3
    for name, pred in (("a1", gt), ("a2", gt), ("b1", half)):
        nifti(tmp_path / "gt" / f"{name}_gt.nii.gz", gt)
        nifti(tmp_path / "pred" / f"{name}.nii.gz", pred)
    table = tmp_path / "domains.csv"
    table.write_text("case,domain\na1,siteA\na2,siteA\nb1,siteB\n")
    code, out, err = run_cli("evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--class-names", "LV",
                             "--domains", table, "--output", tmp_path / "report.csv")
    assert code == 0, err
    counts = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith(("siteA", "siteB", "all "))}
    assert counts == {"siteA": "2", "siteB": "1", "all": "3"}
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    means = {(r["domain"], r["class"]): float(r["dice"]) for r in rows if r["case"] == "MEAN"}
    assert means[("siteA", "mean")] == pytest.approx(1.0)
    assert means[("siteB", "LV")] == pytest.approx(2 / 3, abs=1e-5)
    assert means[("all", "mean")] == pytest.approx((1 + 1 + 2 / 3) / 3, abs=1e-5)
    assert [r["domain"] for r in rows if r["case"] == "b1"] == ["siteB"]

    report = evaluate_folders(tmp_path / "pred", tmp_path / "gt", domains={"a1": "x", "a2": "x", "b1": "y"})
    assert report.by_domain["y"]["mean"]["dice"]["n"] == 1 and "y " in format_domain_table(report)
    with pytest.raises(UserError, match=r"--domains: no domain for 1 prediction\(s\): b1"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", domains={"a1": "x", "a2": "x"})
    (tmp_path / "bad.csv").write_text("name,site\na1,x\n")
    code, _, err = run_cli("evaluate", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--domains", tmp_path / "bad.csv")
    assert code == 2 and err.startswith("error: ") and "needs a header with 'case' and 'domain'" in err


# ----------------------------------------------------------------------------------------------- M&Ms


MNMS_CSV = "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"


def fake_mnms(root: Path) -> Path:
    """Official M&Ms tree: Training/Labeled (vendors A, B), Training/Unlabeled (C, no gt), Validation,
    Testing; 4D (x, y, z, t) images whose frame t holds the value 10 * t + 1, label maps with M&Ms
    classes (1 LV, 2 Myo, 3 RV) at the ED and ES frames only."""
    subjects = [  # code, vendor name, vendor, centre, ED, ES, folder
        ("A0S9V9", "Siemens", "A", 1, 0, 3, "Training/Labeled"),
        ("B1K2L3", "Philips", "B", 2, 4, 1, "Training/Labeled"),
        ("C7U8N9", "GE", "C", 4, 0, 2, "Training/Unlabeled"),
        ("D5V6A7", "Canon", "D", 5, 2, 0, "Validation"),
        ("A4T5E6", "Siemens", "A", 1, 1, 4, "Testing"),
    ]
    rows = [",External code,VendorName,Vendor,Centre,ED,ES,Age,Pathology,Sex,Height,Weight"]
    for index, (code, name, vendor, centre, ed, es, folder) in enumerate(subjects):
        rows.append(f"{index},{code},{name},{vendor},{centre},{ed},{es},50,NOR,M,175,70")
        image = np.stack([np.full((6, 5, 3), 10.0 * t + 1, np.float32) for t in range(5)], axis=-1)
        nifti(root / folder / code / f"{code}_sa.nii.gz", image, zooms=(1.3, 1.3, 10.0))
        if folder != "Training/Unlabeled":
            label = np.zeros((6, 5, 3, 5), np.uint8)
            for frame in (ed, es):
                label[0, :, :, frame], label[1, :, :, frame], label[2, :, :, frame] = 1, 2, 3  # LV, Myo, RV
            nifti(root / folder / code / f"{code}_sa_gt.nii.gz", label, zooms=(1.3, 1.3, 10.0))
    (root / MNMS_CSV).write_text("\n".join(rows) + "\n")
    return root


def test_mnms_reader_on_the_official_tree(tmp_path):
    root = fake_mnms(tmp_path / "MnMs")
    by_split = mnms_cases(root, root / MNMS_CSV)
    assert [c.case_id for c in by_split["training"]] == ["A0S9V9_ED", "A0S9V9_ES", "B1K2L3_ED", "B1K2L3_ES", "C7U8N9_ED", "C7U8N9_ES"]
    assert [(c.case_id, c.domain, c.frame) for c in by_split["validation"]] == [("D5V6A7_ED", "D", 2), ("D5V6A7_ES", "D", 0)]
    assert [c.case_id for c in by_split["test"]] == ["A4T5E6_ED", "A4T5E6_ES"]
    assert [c.label is None for c in by_split["training"]] == [False] * 4 + [True] * 2  # Training/Unlabeled has no gt

    # Loaded through the data checks: each case is its 3D frame, labels in ACDC order (1 RV, 2 Myo, 3 LV).
    splits = Splits(labeled=by_split["training"][:4], validation=by_split["validation"], test=by_split["test"])
    loaded, problems = check_splits(splits, 4, semi_supervised=False)
    require_clean(problems)
    b_es = loaded["labeled"][3]
    assert b_es.case.case_id == "B1K2L3_ES" and b_es.image.array.shape == (6, 5, 3)
    assert np.all(b_es.image.array == 11.0)  # frame 1 of B1K2L3
    assert b_es.image.spacing == pytest.approx((1.3, 1.3, 10.0))
    label = b_es.label.array
    assert (label[0] == 3).all() and (label[1] == 2).all() and (label[2] == 1).all() and (label[3:] == 0).all()

    # One vendor only; vendor names are checked against the CSV.
    only_b = mnms_cases(root, root / MNMS_CSV, vendors=["B"])
    assert {c.domain for cases in only_b.values() for c in cases} == {"B"}
    with pytest.raises(UserError, match=r"data.vendors: E not in .*vendors there: A, B, C, D"):
        mnms_cases(root, root / MNMS_CSV, vendors=["E"])


def test_mnms_reader_errors(tmp_path):
    root = fake_mnms(tmp_path / "MnMs")
    text = (root / MNMS_CSV).read_text()
    (root / MNMS_CSV).write_text(text.replace("B1K2L3,Philips,B,2,4,1", "B1K2L3,Philips,B,2,7,1"))
    by_split = mnms_cases(root, root / MNMS_CSV)
    _, problems = check_splits(Splits(labeled=by_split["training"][:4], validation=by_split["validation"]), 4, False)
    assert any("B1K2L3_sa.nii.gz: time frame 7 out of range, the image has 5 frames" in p for p in problems)
    (root / MNMS_CSV).write_text(text.replace("D5V6A7", "ZZZZZZ"))
    with pytest.raises(UserError, match=r"Validation/D5V6A7: case D5V6A7 is not listed in .*M&Ms_Dataset"):
        mnms_cases(root, root / MNMS_CSV)
    (root / MNMS_CSV).write_text(text.replace("Vendor,", "Maker,"))
    with pytest.raises(UserError, match="missing column\\(s\\) Vendor"):
        mnms_cases(root, root / MNMS_CSV)


def test_export_frames_feeds_evaluate_per_vendor(tmp_path, run_cli):
    root = fake_mnms(tmp_path / "MnMs")
    code, out, err = run_cli("export-frames", "--root", root, "--csv", root / MNMS_CSV, "--out", tmp_path / "frames")
    assert code == 0, err
    assert "wrote 10 frames" in out
    image = nib.load(str(tmp_path / "frames" / "D5V6A7" / "D5V6A7_ED.nii.gz"))
    assert image.shape == (6, 5, 3) and np.all(np.asarray(image.dataobj) == 21.0)  # frame 2
    assert image.header.get_zooms() == pytest.approx((1.3, 1.3, 10.0))
    gt = np.asarray(nib.load(str(tmp_path / "frames" / "D5V6A7" / "D5V6A7_ED_gt.nii.gz")).dataobj)
    assert (gt[0] == 3).all() and (gt[2] == 1).all()  # M&Ms LV (1) is ACDC's 3, RV (3) is 1
    assert not (tmp_path / "frames" / "C7U8N9" / "C7U8N9_ED_gt.nii.gz").exists()
    assert "D5V6A7_ES,D,5,validation" in (tmp_path / "frames" / "domains.csv").read_text()
    # The ground truth as a "perfect prediction": Dice mean (token 11: 3 per "m +/- s" cell) 1 per vendor.
    pred = tmp_path / "pred"
    pred.mkdir()
    for path in (tmp_path / "frames").rglob("*_gt.nii.gz"):
        (pred / path.name.replace("_gt", "")).write_bytes(path.read_bytes())
    code, out, err = run_cli("evaluate", "--pred", pred, "--gt", tmp_path / "frames", "--domains", tmp_path / "frames" / "domains.csv")
    assert code == 0, err
    vendor_rows = [line.split() for line in out.splitlines() if line[:2] in ("A ", "B ", "D ")]
    assert [(row[0], row[1], row[11]) for row in vendor_rows] == [("A", "4", "1.0000"), ("B", "2", "1.0000"), ("D", "2", "1.0000")]
    code, _, err = run_cli("export-frames", "--root", root, "--csv", root / MNMS_CSV, "--out", root / "frames")
    assert code == 2 and "lies inside the M&Ms root" in err


def test_acdc_to_mnms_recipe_checks_data(tmp_path, run_cli, phantom_root):
    """recipes/acdc_to_mnms.yaml on a phantom ACDC root and the fake M&Ms tree: vendors are domains."""
    root = fake_mnms(tmp_path / "MnMs")
    manifest = tmp_path / "m"
    manifest.mkdir()
    for name, ids in (("val.txt", ["patient002"]), ("test.txt", ["patient001"]), ("labeled_order.txt", ["patient003"])):
        (manifest / name).write_text("\n".join(ids) + "\n")
    sets = [f"data.labeled.root={phantom_root}", f"data.labeled.manifest={manifest}",
            f"data.unlabeled.root={root}", f"data.unlabeled.csv={root / MNMS_CSV}"]
    code, out, err = run_cli("check-data", REPO / "recipes" / "acdc_to_mnms.yaml", *[a for s in sets for a in ("--set", s)])
    assert code == 0, err
    assert "labeled: 12 cases" in out and "unlabeled: 6 cases" in out and "validation: 4 cases" in out
    data = load_recipe(REPO / "recipes" / "acdc_to_mnms.yaml", sets).data
    splits = resolve_splits(data)
    assert splits.domain_roles == {"source": "source", "A": "target", "B": "target", "C": "target", "D": "target"}


# ----------------------------------------------------------------------------------------------- CLI


TINY = [
    "train.iterations=4", "train.val_every=2", "train.log_every=1", "train.batch_size=2", "train.unlabeled_batch_size=2",
    "data.input_size=[32,32]", "model.channels=[4,8,16]", "model.strides=[2,2]", "model.num_res_units=0",
    "method.mask.patch_size=4", "method.conf_thresh=0.5",
]


def test_da_demo_recipe_trains_and_reports_per_domain(tmp_path, two_styles, run_cli):
    where = [f"data.labeled.root={two_styles / 'A'}", f"data.labeled.manifest={two_styles / 'mA'}",
             f"data.unlabeled.root={two_styles / 'C'}", f"data.unlabeled.manifest={two_styles / 'mC'}"]
    args = [a for s in where + TINY for a in ("--set", s)]
    code, out, err = run_cli("train", REPO / "recipes" / "da_demo.yaml", *args, "--output", tmp_path / "run")
    assert code == 0, err
    assert "best validation dice_mean/target" in out
    assert "iteration 2: validation Dice " in out and "; target: Dice " in out  # readable, per domain
    val = list(csv.DictReader(open(tmp_path / "run" / "val_log.csv")))
    assert [int(r["iteration"]) for r in val] == [2, 4]
    assert {"dice_mean", "dice_mean/source", "dice_mean/target", "dice_LV/target", "best_dice_mean/target"} <= set(val[0])
    assert max(float(r["dice_mean/target"]) for r in val) == pytest.approx(float(val[-1]["best_dice_mean/target"]))

    # Predict both test sets into one folder; evaluate per domain from the run directory's recipe.
    code, _, err = run_cli("predict", "--checkpoint", tmp_path / "run" / "checkpoints" / "best.pt",
                           "--input", two_styles / "A" / "patient001", "--input", two_styles / "C" / "patient031", "--output", tmp_path / "pred")
    assert code == 0, err
    code, out, err = run_cli("evaluate", "--pred", tmp_path / "pred", "--gt", two_styles, "--domains", tmp_path / "run")
    assert code == 0, err
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.split()[:1] in (["source"], ["target"])}
    assert lines == {"source": "2", "target": "2"}


def test_synth_first_numbers_patients(run_cli, tmp_path):
    code, out, err = run_cli("synth", "acdc", "--out", tmp_path / "c", "--patients", "2", "--first", "31", "--style", "C")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["patient031", "patient032"]
    code, _, err = run_cli("synth", "acdc", "--out", tmp_path / "d", "--patients", "5", "--first", "998")
    assert code == 2 and "patient numbers up to 999" in err


def test_separate_source_statistics_train_validate_and_resume_exactly(tmp_path, two_styles, run_cli, monkeypatch):
    """method.domain_norm separate: the checkpoint carries the source statistics of student and teacher
    beside the model's own (the target's), and a resumed run reproduces them exactly."""
    import torch

    from conftest import train_interrupted_after

    where = [f"data.labeled.root={two_styles / 'A'}", f"data.labeled.manifest={two_styles / 'mA'}",
             f"data.unlabeled.root={two_styles / 'C'}", f"data.unlabeled.manifest={two_styles / 'mC'}"]
    settings = where + TINY + ["method.domain_norm=separate", "method.recalibrate_norm=0", "method.warmup_iterations=1", "method.rampup_iterations=0",
                               "train.val_every=2", "train.iterations=4"]
    recipes = {}
    for name in ("full", "split"):
        recipe = load_recipe(REPO / "recipes" / "da_demo.yaml", [*settings, f"output_dir={tmp_path / name}"])
        recipes[name] = tmp_path / f"{name}.yaml"
        recipes[name].write_text(recipe.to_yaml())
    code, out, err = run_cli("train", recipes["full"], "--no-progress")
    assert code == 0, err
    assert "; target: Dice " in out
    assert train_interrupted_after(run_cli, monkeypatch, recipes["split"], 2)[0] == 130
    assert run_cli("train", recipes["split"], "--no-progress", "--resume")[0] == 0
    a, b = (torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True) for n in ("full", "split"))
    source = a["source_statistics"]
    assert source["student"] and source["teacher"]
    key = next(k for k in source["teacher"] if k.endswith("running_mean"))
    assert not torch.equal(source["teacher"][key], a["teacher"][key])  # two sets, not one
    for who in ("student", "teacher"):
        for k, v in source[who].items():
            torch.testing.assert_close(v, b["source_statistics"][who][k], rtol=0, atol=0, msg=f"{who} {k}")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
