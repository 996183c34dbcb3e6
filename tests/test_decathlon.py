"""The Medical Segmentation Decathlon's dataset.json as downloaded: metadata keys, `labels` and
`modality`, `./` paths, `test` as plain image paths, no `validation` section; num_labeled and the
seeded validation hold-out on datalists; and the CLI (check-data, train, predict) in 2D and 3D."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import TINY_3D, tiny_recipe
from maskmatch_med.config import Recipe, load_recipe
from maskmatch_med.data.datalist import datalist_splits, section_images
from maskmatch_med.data.splits import resolve_datalist_classes, resolve_splits
from maskmatch_med.errors import UserError

LABELS = {"0": "background", "1": "right ventricle", "2": "myocardium", "3": "left ventricle"}
METADATA = {
    "name": "Phantom", "description": "Cardiac phantom in the Decathlon layout", "reference": "this test",
    "licence": "CC-BY-SA 4.0", "relase": "1.0 04/05/2018", "tensorImageSize": "3D", "modality": {"0": "MRI"},
}


def write_dataset_json(root: Path, training: list, test: list, **changes) -> Path:
    """A dataset.json with every Decathlon metadata key, as the Decathlon writes it."""
    content = {**METADATA, "labels": LABELS, "numTraining": len(training), "numTest": len(test), "training": training, "test": test}
    content.update(changes)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(content, indent=4))
    return root / "dataset.json"


def write_task(root: Path, phantom_root: Path, train_patients=(3, 4, 5), test_patients=(6,)) -> Path:
    """A Task folder as downloaded: imagesTr/, labelsTr/, imagesTs/ (with the macOS `._` twins the
    Decathlon tarballs carry) and dataset.json with `./` paths; phantom frames renamed heart_NNN."""
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    training, test, number = [], [], 0
    for split, patients in (("Tr", train_patients), ("Ts", test_patients)):
        for patient in patients:
            for image in sorted(p for p in (phantom_root / f"patient{patient:03d}").glob("*.nii.gz") if not p.name.endswith("_gt.nii.gz")):
                number += 1
                name = f"heart_{number:03d}.nii.gz"
                shutil.copy(image, root / f"images{split}" / name)
                (root / f"images{split}" / f"._{name}").write_bytes(b"\x00\x05\x16\x07")
                if split == "Tr":
                    shutil.copy(image.with_name(image.name.replace(".nii.gz", "_gt.nii.gz")), root / "labelsTr" / name)
                    training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
                else:
                    test.append(f"./imagesTs/{name}")
    return write_dataset_json(root, training, test)


def fake_dataset_json(root: Path, cases: int = 6, test: int = 2, **changes) -> Path:
    """A dataset.json whose files need not exist (splitting reads no image)."""
    training = [{"image": f"./imagesTr/c{i:02d}.nii.gz", "label": f"./labelsTr/c{i:02d}.nii.gz"} for i in range(cases)]
    return write_dataset_json(root, training, [f"./imagesTs/t{i:02d}.nii.gz" for i in range(test)], **changes)


def datalist_recipe(datalist: Path, **data) -> Recipe:
    return Recipe.model_validate({"data": {"layout": "datalist", "datalist": str(datalist), **data}})


# ------------------------------------------------------------------------------ reading the file


def test_decathlon_file_is_read_as_published(tmp_path):
    """Metadata keys are accepted, `./` paths resolve inside the folder, `test` strings are unlabeled images."""
    splits = datalist_splits(fake_dataset_json(tmp_path, cases=3, test=2))
    assert [c.case_id for c in splits.labeled] == ["c00", "c01", "c02"]
    assert splits.labeled[0].image == (tmp_path / "imagesTr" / "c00.nii.gz").resolve()
    assert splits.labeled[0].label == (tmp_path / "labelsTr" / "c00.nii.gz").resolve()
    assert [(c.case_id, c.label, c.audit_label) for c in splits.unlabeled] == [("t00", None, None), ("t01", None, None)]
    assert splits.validation == [] and splits.test == []


def test_labeled_test_entries_stay_test_cases(tmp_path):
    test = ["./imagesTs/t0.nii.gz", {"image": "./imagesTs/t1.nii.gz"}, {"image": "./imagesTs/t2.nii.gz", "label": "./labelsTs/t2.nii.gz"}]
    splits = datalist_splits(write_dataset_json(tmp_path, [{"image": "a.nii.gz", "label": "b.nii.gz"}], test))
    assert [c.case_id for c in splits.unlabeled] == ["t0", "t1"]
    assert [c.case_id for c in splits.test] == ["t2"]


@pytest.mark.parametrize("key", ["lables", "validaton", "file_ending"])
def test_other_top_level_keys_are_still_errors(tmp_path, key):
    path = fake_dataset_json(tmp_path, **{key: {}})
    with pytest.raises(UserError, match=f"dataset.json: unknown section '{key}'"):
        datalist_splits(path)


def test_test_entries_outside_the_folder_are_refused(tmp_path):
    path = write_dataset_json(tmp_path, [{"image": "a.nii.gz", "label": "b.nii.gz"}], ["../elsewhere/t.nii.gz"])
    with pytest.raises(UserError, match=r"test\[0\]: \.\./elsewhere/t.nii.gz lies outside"):
        datalist_splits(path)


def test_multichannel_modality_is_refused_naming_the_key(tmp_path):
    path = fake_dataset_json(tmp_path, modality={"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"})
    with pytest.raises(UserError, match=r"dataset.json: modality lists 4 channels \(FLAIR, T1w, t1gd, T2w\); multi-channel input is not supported"):
        datalist_splits(path)
    with pytest.raises(UserError, match="modality lists 4 channels"):
        resolve_datalist_classes(datalist_recipe(path))


@pytest.mark.parametrize("labels", [["background", "liver"], {"0": "background", "2": "liver"}, {"background": 0, "liver": 1}, {"0": "background", "1": ""}])
def test_malformed_labels_name_the_key(tmp_path, labels):
    with pytest.raises(UserError, match=r"dataset.json: labels: expected"):
        resolve_datalist_classes(datalist_recipe(fake_dataset_json(tmp_path, labels=labels)))


def test_section_images_for_predict(tmp_path):
    path = fake_dataset_json(tmp_path, cases=2, test=2)
    assert section_images(path, "test") == [(tmp_path / "imagesTs" / f"t0{i}.nii.gz").resolve() for i in range(2)]
    assert [p.name for p in section_images(path, "training")] == ["c00.nii.gz", "c01.nii.gz"]
    with pytest.raises(UserError, match="no section 'validation' \\(sections here: training, test\\)"):
        section_images(path, "validation")


# ------------------------------------------------------------------------------ labels and the recipe's classes


def test_classes_come_from_labels_when_the_recipe_does_not_set_them(tmp_path):
    path = fake_dataset_json(tmp_path, labels={"0": "background", "1": "left atrium"})
    recipe, notes = resolve_datalist_classes(datalist_recipe(path))
    assert recipe.data.num_classes == 2 and recipe.data.class_names == ["left atrium"]
    assert notes == [f"classes from {path} labels: background, left atrium"]
    again, notes = resolve_datalist_classes(Recipe.model_validate(recipe.model_dump(mode="json")))  # a resumed run's recipe.yaml
    assert again.data.num_classes == 2 and notes == []


def test_a_different_class_count_is_an_error_naming_both(tmp_path):
    path = fake_dataset_json(tmp_path, labels={"0": "background", "1": "left atrium"})
    with pytest.raises(UserError) as error:
        resolve_datalist_classes(datalist_recipe(path, num_classes=4, class_names=["RV", "Myo", "LV"]))
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    assert "labels names 2 classes (background, left atrium)" in message and "data.num_classes=4 (background, RV, Myo, LV)" in message
    assert "set data.num_classes=2 and data.class_names=[left atrium]" in message
    with pytest.raises(UserError, match="data.num_classes=4"):  # class_names alone set the count too
        resolve_datalist_classes(datalist_recipe(path, class_names=["RV", "Myo", "LV"]))


def test_different_names_with_the_same_count_are_a_note(tmp_path):
    path = fake_dataset_json(tmp_path)
    recipe, notes = resolve_datalist_classes(datalist_recipe(path, num_classes=4, class_names=["RV", "Myo", "LV"]))
    assert recipe.data.class_names == ["RV", "Myo", "LV"]
    assert notes == [f"data.class_names [RV, Myo, LV] differ from {path} labels [right ventricle, myocardium, left ventricle]; using the recipe's"]
    recipe, notes = resolve_datalist_classes(datalist_recipe(path, num_classes=4))  # the count alone: names from the file
    assert recipe.data.class_names == ["right ventricle", "myocardium", "left ventricle"] and len(notes) == 1
    _, notes = resolve_datalist_classes(datalist_recipe(path, class_names=["Right Ventricle", "myocardium", "left ventricle"]))
    assert notes == []


@pytest.mark.parametrize("name", ["datalist2d.yaml", "datalist3d.yaml"])
def test_shipped_datalist_recipes_take_a_task_as_downloaded(tmp_path, monkeypatch, name):
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # the recipes' paths are relative to the repository root
    recipes = repo / "recipes"
    example, _ = resolve_datalist_classes(load_recipe(recipes / name))
    assert example.data.class_names == ["RV", "Myo", "LV"]  # from the example datalist's labels
    path = fake_dataset_json(tmp_path, labels={"0": "background", "1": "left atrium"})
    recipe, _ = resolve_datalist_classes(load_recipe(recipes / name, [f"data.datalist={path}", "data.val_count=2"]))
    assert recipe.data.num_classes == 2 and recipe.data.class_names == ["left atrium"]
    splits = resolve_splits(recipe.data, semi_supervised=True)
    assert (len(splits.labeled), len(splits.unlabeled), len(splits.validation)) == (4, 2, 2)


def test_a_datalist_without_labels_keeps_the_recipe_classes(tmp_path):
    path = fake_dataset_json(tmp_path)
    content = json.loads(path.read_text())
    del content["labels"]
    path.write_text(json.dumps(content))
    recipe, notes = resolve_datalist_classes(datalist_recipe(path))
    assert recipe.data.num_classes == 4 and notes == []


# ------------------------------------------------------------------------------ num_labeled and the validation hold-out


def test_num_labeled_keeps_the_first_labeled_training_entries(tmp_path):
    path = fake_dataset_json(tmp_path, cases=5, test=1)
    splits = datalist_splits(path, num_labeled=2)
    assert [c.case_id for c in splits.labeled] == ["c00", "c01"]
    assert [c.case_id for c in splits.unlabeled] == ["c02", "c03", "c04", "t00"]
    assert all(c.label is None for c in splits.unlabeled)
    assert splits.unlabeled[0].audit_label == (tmp_path / "labelsTr" / "c02.nii.gz").resolve()  # pseudo-label logs only
    with pytest.raises(UserError, match="data.num_labeled: 6 but .*dataset.json has 5 labeled training cases"):
        datalist_splits(path, num_labeled=6)


def test_datalist_recipes_default_to_every_labeled_case(tmp_path):
    path = fake_dataset_json(tmp_path, cases=5)
    assert datalist_recipe(path).data.num_labeled == "all"
    assert Recipe.model_validate({"data": {"root": "r"}}).data.num_labeled == 3  # ACDC's protocol default
    assert datalist_recipe(path, num_labeled=1).data.num_labeled == 1
    assert len(resolve_splits(datalist_recipe(path, num_labeled=1, val_count=1).data).labeled) == 1


def test_val_count_holds_out_a_seeded_draw_independent_of_order_and_num_labeled(tmp_path):
    path = fake_dataset_json(tmp_path / "a", cases=10)
    splits = datalist_splits(path, val_count=3, val_seed=0)
    held = [c.case_id for c in splits.validation]
    assert len(held) == 3 and held == sorted(held)
    assert not set(held) & {c.case_id for c in splits.labeled} and len(splits.labeled) == 7
    assert all(c.label is not None for c in splits.validation)
    assert [c.case_id for c in datalist_splits(path, num_labeled=2, val_count=3).validation] == held
    content = json.loads(path.read_text())
    content["training"].reverse()
    reversed_path = tmp_path / "b" / "dataset.json"
    reversed_path.parent.mkdir()
    reversed_path.write_text(json.dumps(content))
    assert [c.case_id for c in datalist_splits(reversed_path, val_count=3).validation] == held
    draws = {tuple(c.case_id for c in datalist_splits(path, val_count=3, val_seed=seed).validation) for seed in range(5)}
    assert len(draws) > 1
    labeled = datalist_splits(path, num_labeled=2, val_count=3).labeled
    assert [c.case_id for c in labeled] == [f"c{i:02d}" for i in range(10) if f"c{i:02d}" not in held][:2]


def test_val_count_errors(tmp_path):
    path = fake_dataset_json(tmp_path, cases=3)
    with pytest.raises(UserError, match="data.val_count: 3 but .* has 3 labeled training cases; leave at least one"):
        datalist_splits(path, val_count=3)
    with_validation = fake_dataset_json(tmp_path / "v", cases=3, validation=[{"image": "v.nii.gz", "label": "vl.nii.gz"}])
    with pytest.raises(UserError, match="already has a 'validation' section"):
        datalist_splits(with_validation, val_count=1)
    with pytest.raises(UserError, match="val_count holds out cases of a datalist"):
        from maskmatch_med.config import recipe_from_dict

        recipe_from_dict({"data": {"root": "r", "val_count": 2}}, "recipe.yaml")


def test_missing_roles_say_what_to_add(tmp_path):
    path = fake_dataset_json(tmp_path, cases=3, test=0)
    with pytest.raises(UserError) as error:
        resolve_splits(datalist_recipe(path).data)
    assert str(error.value) == (
        f"{path}: section 'validation' is missing; add labeled 'validation' entries, or hold out labeled "
        "'training' cases with data.val_count=N (seeded by data.val_seed)"
    )
    assert len(resolve_splits(datalist_recipe(path, val_count=1).data).validation) == 1
    with pytest.raises(UserError, match=r"no unlabeled images .*set data.num_labeled below the 2 labeled training cases"):
        resolve_splits(datalist_recipe(path, val_count=1).data, semi_supervised=True)
    assert len(resolve_splits(datalist_recipe(path, val_count=1, num_labeled=1).data, semi_supervised=True).unlabeled) == 1


# ------------------------------------------------------------------------------ the CLI on a task folder, 2D and 3D


def _task_recipe(tmp_path: Path, phantom_root: Path, dims: int, **data) -> Path:
    """tiny_recipe on the task's dataset.json: one case held out, 2 labeled; no class keys (from labels)."""
    sections = TINY_3D if dims == 3 else {}
    data = {"layout": "datalist", "datalist": str(tmp_path / "Task99_Phantom" / "dataset.json"), "root": None,
            "val_count": 1, "num_labeled": 2, **data}
    return tiny_recipe(tmp_path / "recipe.yaml", phantom_root, tmp_path, tmp_path / "run", data=data, **sections)


@pytest.mark.parametrize("dims", [2, 3])
def test_decathlon_task_folder_check_data_train_predict(tmp_path, phantom_root, run_cli, dims):
    task = tmp_path / "Task99_Phantom"
    write_task(task, phantom_root)  # 6 training cases, 2 test images
    recipe = _task_recipe(tmp_path, phantom_root, dims)

    code, out, err = run_cli("check-data", recipe)
    assert code == 0, err
    assert f"note: classes from {task / 'dataset.json'} labels: background, right ventricle, myocardium, left ventricle" in out
    assert "   labeled: 2 cases" in out and " unlabeled: 5 cases" in out and "validation: 1 case\n" in out and "test: 0 cases" in out
    assert "validation held out of 'training' (data.val_count=1, data.val_seed=0): heart_" in out

    code, out, err = run_cli("train", recipe, "--no-progress", "--set", "train.iterations=2")
    assert code == 0, err
    assert out.startswith("note: classes from")
    saved = Recipe.model_validate(__import__("yaml").safe_load((tmp_path / "run" / "recipe.yaml").read_text()))
    assert saved.data.num_classes == 4 and saved.data.class_names == ["right ventricle", "myocardium", "left ventricle"]

    best = tmp_path / "run" / "checkpoints" / "best.pt"
    code, out, err = run_cli("predict", "--checkpoint", best, "--datalist", task / "dataset.json", "--output", tmp_path / "pred")
    assert code == 0, err
    assert "wrote 2 label maps" in out
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz")) == ["heart_007.nii.gz", "heart_008.nii.gz"]
    assert "right ventricle" in (tmp_path / "pred" / "labels.json").read_text()
    if dims == 2:  # nnU-Net's habit, the images folder itself: the same cases (the `._` twins are skipped)
        code, out, err = run_cli("predict", "--checkpoint", best, "--input", task / "imagesTs", "--output", tmp_path / "pred_dir")
        assert code == 0 and "wrote 2 label maps" in out, err


def _one_line_error(code: int, err: str, *parts: str) -> None:
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert all(part in err for part in parts), err


@pytest.mark.parametrize("dims", [2, 3])
def test_decathlon_task_folder_mistakes_are_one_line(tmp_path, phantom_root, run_cli, dims):
    task = tmp_path / "Task99_Phantom"
    datalist = write_task(task, phantom_root, train_patients=(3,), test_patients=())
    recipe = _task_recipe(tmp_path, phantom_root, dims, num_labeled=1)

    code, _, err = run_cli("check-data", recipe, "--set", "data.val_count=0")
    _one_line_error(code, err, f"{datalist}: section 'validation' is missing", "data.val_count=N")
    code, _, err = run_cli("train", recipe, "--no-progress", "--set", "data.num_classes=3", "--set", "data.class_names=[a, b]")
    _one_line_error(code, err, str(datalist), "labels names 4 classes", "data.num_classes=3")
    code, _, err = run_cli("check-data", recipe, "--set", "data.num_labeled=2")
    _one_line_error(code, err, "data.num_labeled: 2", "1 labeled training cases (1 held out by data.val_count)")

    content = json.loads(datalist.read_text())
    content["modality"] = {"0": "T2", "1": "ADC"}
    datalist.write_text(json.dumps(content))
    for command in (("check-data", recipe), ("train", recipe, "--no-progress")):
        code, _, err = run_cli(*command)
        _one_line_error(code, err, f"{datalist}: modality lists 2 channels (T2, ADC)")


def test_predict_datalist_option_errors(tmp_path, run_cli):
    path = fake_dataset_json(tmp_path, cases=1, test=0)
    base = ["predict", "--checkpoint", tmp_path / "missing.pt", "--output", tmp_path / "out"]
    code, _, err = run_cli(*base)
    _one_line_error(code, err, "give --input FILE_OR_DIR (repeatable) or --datalist FILE")
    code, _, err = run_cli(*base, "--datalist", path, "--section", "tests")
    _one_line_error(code, err, "--section: 'tests' is not a datalist section")
    code, _, err = run_cli(*base, "--datalist", path)
    _one_line_error(code, err, f"{path}: section 'test' is empty")
    code, _, err = run_cli(*base, "--input", tmp_path, "--section", "validation")
    _one_line_error(code, err, "--section: applies to --datalist FILE")
    assert not (tmp_path / "out").exists()
