"""`maskmatch-med compare`: evaluate reports side by side, and one-line errors for bad input.

The reports are written by evaluate's own code: from label maps (one test) or from chosen means through
`write_report_csv` (the others), so a change of the report format breaks these tests, not the demo.
"""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from maskmatch_med.evaluation.evaluate import MEAN_ROW, EvaluationReport, evaluate_folders, write_report_csv
from maskmatch_med.evaluation.metrics import CLASS_METRICS

CLASSES = ["RV", "Myo", "LV"]
CASES = ["patient001_frame01", "patient001_frame12"]


def _report_csv(path, dice, hd95=None, asd=None, cases=CASES, classes=CLASSES, domains=None):
    """An evaluate report whose MEAN rows hold the given Dice per class (then the class average), HD95
    and ASD; written by evaluate's CSV writer. `domains`: {domain: dice list}, a per-domain report."""

    def summary(dice_values):
        s = {}
        for i, name in enumerate([*classes, MEAN_ROW]):
            values = {"dice": dice_values[i], "jaccard": dice_values[i], "hd95_mm": (hd95 or {}).get(name),
                      "asd_mm": (asd or {}).get(name), "hd95_vox": None, "asd_vox": None}
            s[name] = {m: {"mean": values[m], "std": 0.0, "n": len(cases)} for m in CLASS_METRICS}
        return s

    per_case = [{"case": c, "class": n, **{m: 0.5 for m in CLASS_METRICS}} for c in cases for n in classes]
    report = EvaluationReport(per_case=per_case, summary=summary(dice), class_names=list(classes),
                              num_classes=len(classes) + 1, cases=list(cases))
    if domains:
        names = sorted(domains)
        report.domains = {c: names[i % len(names)] for i, c in enumerate(cases)}
        report.by_domain = {d: summary(v) for d, v in domains.items()}
    write_report_csv(report, path)
    return path


def _table(out: str) -> dict[str, list[str]]:
    """The printed table as {row label: cells}; a label is the text before the first number or n/a
    (a line without one, or starting with a number, is not a row)."""
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        for i, part in enumerate(parts):
            if part == "n/a" or part.lstrip("+-").replace(".", "", 1).isdigit():
                if i:
                    rows[" ".join(parts[:i])] = parts[i:]
                break
    return rows


@pytest.fixture
def two_reports(tmp_path):
    semi = _report_csv(tmp_path / "semi.csv", [0.8, 0.7, 0.9, 0.8], hd95={MEAN_ROW: 5.0}, asd={MEAN_ROW: 1.25})
    sup = _report_csv(tmp_path / "sup.csv", [0.6, 0.55, 0.85, 0.6667], hd95={MEAN_ROW: 12.5}, asd={MEAN_ROW: 3.0})
    return semi, sup


def test_table_shows_each_report_and_the_first_minus_the_other(run_cli, two_reports, tmp_path):
    semi, sup = two_reports
    code, out, err = run_cli("compare", f"MaskMatch={semi}", f"supervised={sup}")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["MaskMatch", "supervised", "MaskMatch", "-", "supervised"]
    rows = _table(out)
    assert rows["Dice RV"] == ["0.8000", "0.6000", "+0.2000"]
    assert rows["Dice Myo"] == ["0.7000", "0.5500", "+0.1500"]
    assert rows["Dice LV"] == ["0.9000", "0.8500", "+0.0500"]
    assert rows["Dice mean"] == ["0.8000", "0.6667", "+0.1333"]
    assert rows["HD95 mean (mm)"] == ["5.00", "12.50", "-7.50"]
    assert rows["ASD mean (mm)"] == ["1.25", "3.00", "-1.75"]
    assert list(rows) == ["Dice RV", "Dice Myo", "Dice LV", "Dice mean", "HD95 mean (mm)", "ASD mean (mm)"]
    assert "2 cases in every report" in out and "lower is better" in out
    # columns line up: the header, both rules and every row end at the same column
    table = [line for line in lines if line.strip() and not line.startswith("2 cases")]
    assert len({len(line) for line in table}) == 1


def test_three_reports_and_undefined_means(run_cli, tmp_path, two_reports):
    semi, sup = two_reports
    fix = _report_csv(tmp_path / "fix.csv", [0.75, None, 0.8, 0.775], hd95={MEAN_ROW: None})
    code, out, err = run_cli("compare", f"a={semi}", f"b={sup}", f"c={fix}")
    assert code == 0, err
    assert out.splitlines()[0].split() == ["a", "b", "c", "a", "-", "b", "a", "-", "c"]
    rows = _table(out)
    assert rows["Dice RV"] == ["0.8000", "0.6000", "0.7500", "+0.2000", "+0.0500"]
    assert rows["Dice Myo"] == ["0.7000", "0.5500", "n/a", "+0.1500", "n/a"]
    assert rows["HD95 mean (mm)"] == ["5.00", "12.50", "n/a", "-7.50", "n/a"]
    assert "nan" not in out.lower()


def test_output_csv(run_cli, two_reports, tmp_path):
    semi, sup = two_reports
    target = tmp_path / "out" / "compare.csv"
    code, out, err = run_cli("compare", f"MaskMatch={semi}", f"supervised={sup}", "--output", target)
    assert code == 0, err
    assert f"comparison written to {target}" in out
    rows = list(csv.reader(target.read_text().splitlines()))
    assert rows[0] == ["metric", "class", "MaskMatch", "supervised", "MaskMatch - supervised"]
    by_key = {(r[0], r[1]): [float(v) for v in r[2:]] for r in rows[1:]}
    assert list(by_key) == [("dice", "RV"), ("dice", "Myo"), ("dice", "LV"), ("dice", "mean"), ("hd95_mm", "mean"), ("asd_mm", "mean")]
    assert by_key[("dice", "Myo")] == pytest.approx([0.7, 0.55, 0.15])
    assert by_key[("hd95_mm", "mean")] == pytest.approx([5.0, 12.5, -7.5])


def _save(labels, path, spacing=(1.5, 1.5, 5.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), np.diag([*spacing, 1.0])), str(path))


def test_reports_from_real_evaluation(run_cli, tmp_path):
    """Two prediction folders scored by evaluate against the same ground truth: compare shows evaluate's means."""
    shape = (14, 12, 4)
    gt = np.zeros(shape, np.uint8)
    gt[2:6, 2:6, 1:3], gt[7:12, 3:9, 0:3], gt[8:11, 4:7, 1:3] = 1, 2, 3
    shifted = np.roll(gt, 1, axis=1)
    reports = {}
    for name, pred in (("good", gt), ("shifted", shifted)):
        for case in ("a", "b"):
            _save(gt, tmp_path / "gt" / f"{case}_gt.nii.gz")
            _save(pred if case == "b" else gt, tmp_path / name / f"{case}.nii.gz")
        reports[name] = evaluate_folders(tmp_path / name, tmp_path / "gt", output_csv=tmp_path / f"{name}.csv", class_names=CLASSES)
    code, out, err = run_cli("compare", f"good={tmp_path / 'good.csv'}", f"shifted={tmp_path / 'shifted.csv'}")
    assert code == 0, err
    rows = _table(out)
    good, worse = reports["good"], reports["shifted"]
    for cls in CLASSES:
        a, b = good.mean("dice", cls), worse.mean("dice", cls)
        assert rows[f"Dice {cls}"] == [f"{a:.4f}", f"{b:.4f}", f"{a - b:+.4f}"]
    assert float(rows["Dice mean"][2]) > 0 and float(rows["HD95 mean (mm)"][2]) < 0
    assert rows["HD95 mean (mm)"][1] == f"{worse.mean('hd95_mm'):.2f}"


def test_per_domain_report_contributes_its_all_cases_means(run_cli, tmp_path, two_reports):
    semi, _ = two_reports
    per_domain = _report_csv(tmp_path / "da.csv", [0.5, 0.4, 0.6, 0.5], domains={"A": [0.9] * 4, "C": [0.1] * 4})
    assert "MEAN,C,RV" in per_domain.read_text()
    code, out, err = run_cli("compare", f"semi={semi}", f"source_only={per_domain}")
    assert code == 0, err
    assert _table(out)["Dice RV"] == ["0.8000", "0.5000", "+0.3000"]


def _expect_error(run_cli, *args, contains):
    code, out, err = run_cli("compare", *map(str, args))
    assert code == 2
    assert out == ""  # no half table
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in contains:
        assert str(text) in lines[0]
    assert "Traceback" not in err


def test_missing_file_and_folder(run_cli, two_reports, tmp_path):
    semi, _ = two_reports
    _expect_error(run_cli, f"a={semi}", f"b={tmp_path / 'nope.csv'}", contains=[tmp_path / "nope.csv", "not found", "b="])
    _expect_error(run_cli, f"a={semi}", f"b={tmp_path}", contains=[tmp_path, "folder"])


def test_malformed_arguments(run_cli, two_reports):
    semi, sup = two_reports
    _expect_error(run_cli, f"a={semi}", str(sup), contains=[str(sup), "NAME=REPORT.csv"])
    _expect_error(run_cli, f"a={semi}", f"={sup}", contains=["NAME=REPORT.csv"])
    _expect_error(run_cli, f"a={semi}", "b=", contains=["'b='", "NAME=REPORT.csv"])
    _expect_error(run_cli, f"a={semi}", contains=["at least two reports"])
    _expect_error(run_cli, f"a={semi}", f"a={sup}", contains=["'a'", "twice"])


def test_not_an_evaluate_report(run_cli, two_reports, tmp_path):
    semi, _ = two_reports
    other = tmp_path / "val_log.csv"
    other.write_text("iteration,dice_mean\n200,0.5\n")
    _expect_error(run_cli, f"a={semi}", f"b={other}", contains=[other, "not an evaluate report"])
    binary = tmp_path / "best.pt"
    binary.write_bytes(b"\x80\x02\xff\xfe")
    _expect_error(run_cli, f"a={semi}", f"b={binary}", contains=[binary, "not an evaluate report"])
    no_means = tmp_path / "cut.csv"
    no_means.write_text("\n".join(line for line in semi.read_text().splitlines() if not line.startswith("MEAN")))
    _expect_error(run_cli, f"a={semi}", f"b={no_means}", contains=[no_means, "MEAN rows"])
    bad_cell = tmp_path / "bad_cell.csv"
    bad_cell.write_text(semi.read_text().replace("MEAN,Myo,0.7,", "MEAN,Myo,high,"))
    _expect_error(run_cli, f"a={semi}", f"b={bad_cell}", contains=[bad_cell, "'high' is not a number"])


def test_reports_of_other_classes_or_cases(run_cli, two_reports, tmp_path):
    semi, _ = two_reports
    two_classes = _report_csv(tmp_path / "2cls.csv", [0.5, 0.6, 0.55], classes=["RV", "LV"])
    _expect_error(run_cli, f"a={semi}", f"b={two_classes}", contains=[two_classes, "RV, LV", "RV, Myo, LV"])
    other_cases = _report_csv(tmp_path / "cases.csv", [0.5] * 4, cases=["patient001_frame01", "patient099_frame01"])
    _expect_error(run_cli, f"a={semi}", f"b={other_cases}", contains=[other_cases, "other cases", "patient099_frame01"])


def test_output_may_not_overwrite_an_input(run_cli, two_reports):
    semi, sup = two_reports
    before = sup.read_bytes()
    _expect_error(run_cli, f"a={semi}", f"b={sup}", "--output", sup, contains=[sup, "overwrite"])
    assert sup.read_bytes() == before
