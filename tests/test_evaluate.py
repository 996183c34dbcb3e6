"""Folder evaluation on tiny synthetic NIfTI files."""

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest

from maskmatch_med.errors import UserError
from maskmatch_med.evaluation.evaluate import EvaluationReport, evaluate_folders, format_summary_table
from maskmatch_med.evaluation.metrics import CLASS_METRICS, case_metrics

SPACING = (1.5, 1.5, 5.0)
AFFINE = np.diag([*SPACING, 1.0])
SHAPE = (14, 12, 4)


def _save(arr, path, affine=AFFINE, dtype=np.uint8):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(arr, dtype=dtype), affine), str(path))
    return path


def _labels(shift=0, with_class3=True):
    v = np.zeros(SHAPE, np.uint8)
    v[2:6, 2 + shift : 6 + shift, 1:3] = 1
    v[7:12, 3:9, 0:3] = 2
    if with_class3:
        v[8:11, 4 + shift : 7 + shift, 1:3] = 3
    return v


@pytest.fixture
def acdc(tmp_path):
    """ACDC-style root (images, *_gt labels, Info.cfg) and a prediction folder with labels.json."""
    root, pred = tmp_path / "acdc", tmp_path / "pred"
    gts = {}
    for pid, shift in (("patient001", 0), ("patient002", 1)):
        for frame in ("frame01", "frame12"):
            name = f"{pid}_{frame}"
            gt = _labels()
            gts[name] = gt
            _save(gt, root / pid / f"{name}_gt.nii.gz")
            _save(np.full(SHAPE, 7.5), root / pid / f"{name}.nii.gz", dtype=np.float32)  # the image: a decoy
            _save(_labels(shift), pred / f"{name}.nii.gz")
        _save(np.zeros((*SHAPE, 2)), root / pid / f"{pid}_4d.nii.gz", dtype=np.float32)
        (root / pid / "Info.cfg").write_text("ED: 1\nES: 12\n")
    (pred / "labels.json").write_text(json.dumps({"0": "background", "1": "RV", "2": "Myo", "3": "LV"}))
    return root, pred, gts


def test_acdc_nested_gt_matches_case_metrics(acdc, tmp_path):
    root, pred, gts = acdc
    report = evaluate_folders(pred, root)
    assert isinstance(report, EvaluationReport)
    assert report.class_names == ["RV", "Myo", "LV"] and report.num_classes == 4
    assert report.cases == ["patient001_frame01", "patient001_frame12", "patient002_frame01", "patient002_frame12"]
    assert len(report.per_case) == 4 * 3
    row = next(r for r in report.per_case if r["case"] == "patient002_frame12" and r["class"] == "LV")
    pred_arr = np.asarray(nib.load(str(pred / "patient002_frame12.nii.gz")).dataobj)
    ref = case_metrics(pred_arr, gts["patient002_frame12"], 4, SPACING)[3]
    for m in CLASS_METRICS:
        assert row[m] == pytest.approx(ref[m])
    assert row["label"] == 3
    # patient001 is perfect, patient002 shifted by one voxel in-plane (1.5 mm)
    perfect = [r for r in report.per_case if r["case"].startswith("patient001")]
    assert all(r["dice"] == pytest.approx(1.0) and r["hd95_mm"] == 0.0 for r in perfect)
    assert report.summary["RV"]["dice"]["n"] == 4
    lv_hd = report.summary["LV"]["hd95_mm"]
    assert lv_hd["mean"] == pytest.approx((0 + 0 + 1.5 + 1.5) / 4) and lv_hd["std"] == pytest.approx(0.75)
    assert report.summary["LV"]["hd95_vox"]["mean"] == pytest.approx(0.5)
    class_means = [report.summary[c]["dice"]["mean"] for c in ("RV", "Myo", "LV")]
    assert report.mean("dice") == pytest.approx(np.mean(class_means))


def test_csv_contents_no_nan_and_mean_rows(acdc, tmp_path):
    root, pred, _ = acdc
    # make LV absent from one case's gt and prediction (all-NaN row), and from another's prediction only
    gt_path = root / "patient001" / "patient001_frame01_gt.nii.gz"
    _save(_labels(with_class3=False), gt_path)
    _save(_labels(with_class3=False), pred / "patient001_frame01.nii.gz")
    _save(_labels(1, with_class3=False), pred / "patient002_frame01.nii.gz")
    out = tmp_path / "reports" / "metrics.csv"
    report = evaluate_folders(pred, root, output_csv=out)
    assert report.output_csv == out
    text = out.read_text()
    assert "nan" not in text.lower()
    rows = list(csv.reader(text.splitlines()))
    assert rows[0] == ["case", "class", *CLASS_METRICS]
    body = rows[1:]
    assert len(body) == 4 * 3 + 3 + 1
    empty_row = next(r for r in body if r[:2] == ["patient001_frame01", "LV"])
    assert empty_row[2:] == [""] * 6
    missed = next(r for r in body if r[:2] == ["patient002_frame01", "LV"])
    assert missed[2:4] == ["0", "0"] and missed[4:] == [""] * 4
    means = [r for r in body if r[0] == "MEAN"]
    assert [r[1] for r in means] == ["RV", "Myo", "LV", "mean"]
    lv = report.summary["LV"]
    assert lv["dice"]["n"] == 3 and lv["hd95_mm"]["n"] == 2
    assert float(means[2][2]) == pytest.approx(lv["dice"]["mean"], rel=1e-5)
    assert float(means[3][2]) == pytest.approx(report.mean("dice"), rel=1e-5)
    assert not [p for p in out.parent.iterdir() if p.name != "metrics.csv"]  # no temp file left


def test_summary_has_no_nan_and_table_says_na(tmp_path):
    gt_dir, pred = tmp_path / "gt", tmp_path / "pred"
    for i in range(2):
        _save(_labels(with_class3=False), gt_dir / f"case{i}.nii.gz")
        _save(_labels(with_class3=False), pred / f"case{i}.nii.gz")
    report = evaluate_folders(pred, gt_dir, num_classes=4)
    assert report.class_names == ["class1", "class2", "class3"]
    for cls in report.summary.values():
        for stats in cls.values():
            assert set(stats) == {"mean", "std", "n"}
            for v in (stats["mean"], stats["std"]):
                assert v is None or not math.isnan(v)
    assert report.summary["class3"]["dice"] == {"mean": None, "std": None, "n": 0}
    table = format_summary_table(report)
    assert "nan" not in table.lower()
    assert "n/a" in table
    assert "HD95 (mm)" in table and "ASD (vox)" in table and "mean" in table
    assert len({len(line) for line in table.splitlines()[:2]}) == 1


def test_num_classes_and_names_defaults(tmp_path):
    gt_dir, pred = tmp_path / "gt", tmp_path / "pred"
    _save(_labels(), gt_dir / "a_gt.nii.gz")
    _save(_labels(), pred / "a.nii")  # plain .nii prediction
    report = evaluate_folders(pred, gt_dir)
    assert report.num_classes == 4 and report.class_names == ["class1", "class2", "class3"]
    named = evaluate_folders(pred, gt_dir, class_names=["RV", "Myo", "LV"])
    assert named.class_names == ["RV", "Myo", "LV"]
    with pytest.raises(UserError, match="num_classes"):
        evaluate_folders(pred, gt_dir, class_names=["RV", "Myo"], num_classes=4)
    with pytest.raises(UserError, match="out of range"):
        evaluate_folders(pred, gt_dir, num_classes=3)


def test_shape_mismatch_names_the_file(tmp_path):
    gt_dir, pred = tmp_path / "gt", tmp_path / "pred"
    _save(_labels(), gt_dir / "a.nii.gz")
    _save(_labels()[:, :, :3], pred / "a.nii.gz")
    with pytest.raises(UserError) as err:
        evaluate_folders(pred, gt_dir)
    msg = str(err.value)
    assert "a.nii.gz" in msg and "shape" in msg and "\n" not in msg


def test_affine_mismatch(tmp_path):
    gt_dir, pred = tmp_path / "gt", tmp_path / "pred"
    _save(_labels(), gt_dir / "a.nii.gz")
    _save(_labels(), pred / "a.nii.gz", affine=np.diag([1.5, 1.5, 6.0, 1.0]))
    with pytest.raises(UserError, match="affine"):
        evaluate_folders(pred, gt_dir)


def test_missing_ground_truth_names_prediction(acdc):
    root, pred, _ = acdc
    _save(_labels(), pred / "patient003_frame01.nii.gz")
    with pytest.raises(UserError, match="patient003_frame01.nii.gz"):
        evaluate_folders(pred, root)


def test_ground_truth_without_prediction(acdc):
    root, pred, _ = acdc
    (pred / "patient002_frame12.nii.gz").unlink()
    # A dataset root holds more cases than were predicted: listed, not scored...
    report = evaluate_folders(pred, root)
    assert report.unpredicted == ["patient002_frame12"]
    assert "patient002_frame12" not in report.cases
    # ...unless every ground-truth case must have a prediction.
    with pytest.raises(UserError, match="patient002_frame12"):
        evaluate_folders(pred, root, require_all=True)


def test_empty_or_bad_folders(tmp_path):
    gt_dir, pred = tmp_path / "gt", tmp_path / "pred"
    _save(_labels(), gt_dir / "a.nii.gz")
    pred.mkdir()
    (pred / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no prediction"):
        evaluate_folders(pred, gt_dir)
    with pytest.raises(UserError, match="does not exist"):
        evaluate_folders(tmp_path / "nope", gt_dir)
    with pytest.raises(UserError, match="differ"):
        evaluate_folders(gt_dir, gt_dir)


def test_never_overwrites_an_input(tmp_path):
    gt_dir, pred = tmp_path / "gt", tmp_path / "pred"
    _save(_labels(), gt_dir / "a.nii.gz")
    target = _save(_labels(), pred / "a.nii.gz")
    before = target.read_bytes()
    with pytest.raises(UserError, match="overwrite"):
        evaluate_folders(pred, gt_dir, output_csv=target)
    assert target.read_bytes() == before


def test_predictions_inside_gt_dir_are_not_ground_truth(tmp_path):
    gt_dir = tmp_path / "data"
    pred = gt_dir / "predictions"
    _save(_labels(), gt_dir / "labelsTr" / "a.nii.gz")
    _save(_labels(1), pred / "a.nii.gz")
    report = evaluate_folders(pred, gt_dir)
    assert report.cases == ["a"] and report.per_case[0]["dice"] < 1.0


def test_bad_labels_json(tmp_path):
    gt_dir, pred = tmp_path / "gt", tmp_path / "pred"
    _save(_labels(), gt_dir / "a.nii.gz")
    _save(_labels(), pred / "a.nii.gz")
    (pred / "labels.json").write_text("{not json")
    with pytest.raises(UserError, match="labels.json"):
        evaluate_folders(pred, gt_dir)


def test_float_prediction_with_fractions_is_rejected(tmp_path):
    gt_dir, pred = tmp_path / "gt", tmp_path / "pred"
    _save(_labels(), gt_dir / "a.nii.gz")
    _save(np.full(SHAPE, 0.3), pred / "a.nii.gz", dtype=np.float32)
    with pytest.raises(UserError, match="label map"):
        evaluate_folders(pred, gt_dir)


@pytest.mark.parametrize("values, message", [(-1, "negative values"), (np.nan, "NaN or infinite")])
def test_bad_label_values_are_rejected_as_training_rejects_them(tmp_path, values, message):
    """evaluate and the training loaders share one label check, so they fail alike, naming the file."""
    from maskmatch_med.data.nifti import load_label

    gt_dir, pred = tmp_path / "gt", tmp_path / "pred"
    _save(_labels(), gt_dir / "a.nii.gz")
    arr = _labels().astype(np.float32)
    arr[0, 0, 0] = values
    bad = _save(arr, pred / "a.nii.gz", dtype=np.float32)
    with pytest.raises(UserError, match=f"a.nii.gz: label map .*{message}") as from_evaluate:
        evaluate_folders(pred, gt_dir)
    with pytest.raises(UserError) as from_loader:
        load_label(bad)
    assert str(from_evaluate.value) == str(from_loader.value)


def test_cli_refuses_a_predicted_label_that_no_ground_truth_has(tmp_path, run_cli):
    """Without labels.json or --class-names, label 9 in a prediction used to add classes 4-9 to the mean."""
    gt_dir, pred = tmp_path / "gt", tmp_path / "pred"
    stray = _labels()
    stray[0, 0, 0] = 9
    for name, prediction in (("a", _labels()), ("b", stray)):
        _save(_labels(), gt_dir / f"{name}_gt.nii.gz")
        _save(prediction, pred / f"{name}.nii.gz")
    code, out, err = run_cli("evaluate", "--pred", pred, "--gt", gt_dir, "--output", tmp_path / "report.csv")
    assert code == 2 and out == "" and not (tmp_path / "report.csv").exists()
    assert err == (f"error: {pred / 'b.nii.gz'}: label 9 is in no ground-truth file (their labels are 0..3); "
                   "if it is a class, name every class with --class-names (or a labels.json beside the predictions)\n")
    # Named, label 9 is a class: scored, Dice 0 where only the prediction has it.
    code, out, err = run_cli("evaluate", "--pred", pred, "--gt", gt_dir, "--class-names", "c1,c2,c3,c4,c5,c6,c7,c8,c9")
    assert code == 0, err
    assert "c9" in out


def test_cli_class_names_that_do_not_fit_name_their_source(tmp_path, run_cli):
    """--class-names A,B on 4-class maps used to blame the prediction file, as if it were broken."""
    gt_dir, pred = tmp_path / "gt", tmp_path / "pred"
    _save(_labels(), gt_dir / "a_gt.nii.gz")
    _save(_labels(), pred / "a.nii.gz")
    code, out, err = run_cli("evaluate", "--pred", pred, "--gt", gt_dir, "--class-names", "A,B")
    assert code == 2 and out == ""
    assert err == (f"error: --class-names: 2 foreground names for labels 1..2, but {pred / 'a.nii.gz'} holds label 3; "
                   "give one name per foreground label, comma-separated\n")
    (pred / "labels.json").write_text(json.dumps({"0": "background", "1": "RV"}))
    code, _, err = run_cli("evaluate", "--pred", pred, "--gt", gt_dir)
    assert code == 2
    assert err == (f"error: {pred / 'labels.json'}: 1 foreground name for label 1, but {pred / 'a.nii.gz'} holds label 3; "
                   "correct labels.json, or name every class with --class-names\n")
    code, _, err = run_cli("evaluate", "--pred", pred, "--gt", gt_dir, "--class-names", "A,A")
    assert code == 2 and err.startswith("error: --class-names: class names must be unique")
