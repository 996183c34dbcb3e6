"""Layouts -> splits: the ACDC protocol manifests and MONAI datalists."""

import json
from pathlib import Path

import pytest

from maskmatch_med.data.acdc import acdc_splits
from maskmatch_med.data.datalist import datalist_splits
from maskmatch_med.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def fake_acdc(root: Path, ids, es: int = 12) -> Path:
    for number in ids:
        patient = root / f"patient{number:03d}"
        patient.mkdir(parents=True)
        (patient / "Info.cfg").write_text(f"ED: 1\nES: {es}\nGroup: NOR\nHeight: 170.0\nNbFrame: 30\nWeight: 70.0\n")
    return root


def manifest(dir_: Path, val, test, order) -> Path:
    dir_.mkdir()
    for name, ids in (("val.txt", val), ("test.txt", test), ("labeled_order.txt", order)):
        (dir_ / name).write_text("# comment\n" + "".join(f"patient{i:03d}\n" for i in ids))
    return dir_


def test_shipped_acdc_manifest_is_the_ssl4mis_protocol(tmp_path):
    root = fake_acdc(tmp_path / "acdc", range(1, 101))
    splits = acdc_splits(root, REPO / "data_manifests" / "acdc", 3)
    patients = lambda cases: sorted({c.group for c in cases})
    assert patients(splits.validation) == [f"patient{i:03d}" for i in (2, 19, 28, 30, 39, 45, 78, 82, 85, 87)]
    assert len(patients(splits.test)) == 20 and "patient001" in patients(splits.test)
    assert patients(splits.labeled) == ["patient038", "patient050", "patient099"]
    assert len(patients(splits.unlabeled)) == 67
    assert all(c.label is None for c in splits.unlabeled)
    # Both frames of a patient, named from Info.cfg.
    assert sorted(c.case_id for c in splits.labeled if c.group == "patient099") == ["patient099_frame01", "patient099_frame12"]
    assert acdc_splits(root, REPO / "data_manifests" / "acdc", 7).labeled[-1].group == "patient049"
    assert len(patients(acdc_splits(root, REPO / "data_manifests" / "acdc", "all").labeled)) == 70


def test_missing_manifest_patient_is_named(tmp_path):
    root = fake_acdc(tmp_path / "acdc", range(1, 6))
    man = manifest(tmp_path / "m", [2], [9], [3])
    with pytest.raises(UserError, match=r"test.txt: patient009 not found under"):
        acdc_splits(root, man, 1)


def test_overlapping_lists_and_too_many_labels(tmp_path):
    root = fake_acdc(tmp_path / "acdc", range(1, 6))
    with pytest.raises(UserError, match="also in val/test"):
        acdc_splits(root, manifest(tmp_path / "a", [2], [3], [2]), 1)
    with pytest.raises(UserError, match="num_labeled: 2 but"):
        acdc_splits(root, manifest(tmp_path / "b", [2], [3], [4]), 2)


def test_missing_info_cfg(tmp_path):
    root = fake_acdc(tmp_path / "acdc", range(1, 4))
    (root / "patient003" / "Info.cfg").unlink()
    with pytest.raises(UserError, match=r"patient003/Info.cfg: missing"):
        acdc_splits(root, manifest(tmp_path / "m", [1], [2], [3]), 1)


def test_root_must_exist(tmp_path):
    with pytest.raises(UserError, match="data.root"):
        acdc_splits(tmp_path / "nowhere", REPO / "data_manifests" / "acdc", 3)


def test_datalist_sections(tmp_path):
    content = {
        "training": [{"image": "img/a.nii.gz", "label": "lbl/a.nii.gz"}, {"image": "img/b.nii.gz"}],
        "unlabeled": [{"image": "img/c.nii.gz"}],
        "validation": [{"image": "img/d.nii.gz", "label": "lbl/d.nii.gz"}],
    }
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(content))
    splits = datalist_splits(path)
    assert [c.case_id for c in splits.labeled] == ["a"]
    assert [c.case_id for c in splits.unlabeled] == ["b", "c"]
    assert splits.validation[0].label == (tmp_path / "lbl" / "d.nii.gz").resolve()
    assert splits.test == []


@pytest.mark.parametrize(
    "content, message",
    [
        ({"training": [{"image": "../outside.nii.gz", "label": "l.nii.gz"}]}, "outside the datalist's directory"),
        ({"trainng": []}, "unknown section 'trainng'"),
        ({"validation": [{"image": "a.nii.gz"}]}, "validation entries need a label"),
        ({"training": [{"label": "a.nii.gz"}]}, "training\\[0\\]"),
    ],
)
def test_bad_datalists(tmp_path, content, message):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(content))
    with pytest.raises(UserError, match=message):
        datalist_splits(path)
