from pathlib import Path

import pytest
import yaml

from maskmatch_med.config import load_recipe
from maskmatch_med.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, content: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


@pytest.mark.parametrize("name", ["acdc.yaml", "demo.yaml", "datalist2d.yaml", "datalist3d.yaml"])
def test_shipped_recipes_validate(name):
    recipe = load_recipe(REPO / "recipes" / name)
    assert recipe.method.name == "maskmatch"
    assert recipe.method.mask.ratio == 0.7


def test_acdc_recipe_follows_protocol():
    recipe = load_recipe(REPO / "recipes" / "acdc.yaml")
    assert recipe.data.num_labeled == 3
    assert tuple(recipe.data.input_size) == (256, 256)
    assert (recipe.train.batch_size, recipe.train.unlabeled_batch_size) == (12, 12)
    assert (recipe.train.optimizer, recipe.train.lr, recipe.train.momentum, recipe.train.weight_decay) == ("sgd", 0.01, 0.9, 1e-4)
    assert recipe.method.ensemble.scales == [0.75, 1.0, 1.25]
    assert recipe.method.conf_thresh == 0.95


def test_defaults_and_overrides(tmp_path):
    path = write(tmp_path, {"data": {"root": "somewhere"}})
    recipe = load_recipe(path, ["method.mask.ratio=0.5", "method.ensemble.scales=[1.0]", "train.iterations=7", "output_dir=out"])
    assert recipe.method.mask.ratio == 0.5
    assert recipe.method.ensemble.scales == [1.0]
    assert recipe.train.iterations == 7
    assert recipe.output_dir == Path("out")
    assert recipe.method.lambda_u == 1.0 and recipe.method.teacher == "ema" and recipe.method.ema_momentum == 0.99
    assert recipe.train.unlabeled_batch_size == recipe.train.batch_size


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method.nmae=fixmatch"], "method.nmae: unknown key"),
        (["train.iterations=many"], "train.iterations: Input should be a valid integer"),
        (["method.name=meanteacher"], "method.name: Input should be"),
        (["method.mask.ratio=1.5"], "method.mask.ratio"),
        (["method.ensemble.scales=[]"], "method.ensemble.scales: needs at least one scale"),
        (["data.class_names=[a, b]"], "class_names lists 2 names but num_classes=4"),
        (["train.iterations"], "expected KEY=VALUE"),
        (["data.root.x=1"], "data.root"),
    ],
)
def test_bad_recipe_errors_name_the_key(tmp_path, overrides, message):
    path = write(tmp_path, {"data": {"root": "somewhere"}})
    with pytest.raises(UserError) as info:
        load_recipe(path, overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_typo_in_file_names_file_and_key(tmp_path):
    path = write(tmp_path, {"data": {"root": "x"}, "trian": {"iterations": 3}})
    with pytest.raises(UserError, match=r"recipe.yaml: trian: unknown key"):
        load_recipe(path)


def test_missing_and_malformed_recipe(tmp_path):
    with pytest.raises(UserError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(bad)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("data: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(path)


def test_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "demo.yaml")
    again = write(tmp_path, yaml.safe_load(recipe.to_yaml()))
    assert load_recipe(again) == recipe


def test_network_and_data_dimensions_must_agree(tmp_path):
    from maskmatch_med.config import recipe_from_dict

    with pytest.raises(UserError, match="model: deeplabv3plus is a 2D network"):
        recipe_from_dict({"data": {"root": "x"}, "model": {"name": "deeplabv3plus", "spatial_dims": 3}}, "r.yaml")
    with pytest.raises(UserError, match="model: dynunet is a 3D network"):
        recipe_from_dict({"data": {"root": "x"}, "model": {"name": "dynunet"}}, "r.yaml")
    with pytest.raises(UserError, match="model.spatial_dims: layout 'voc' holds 2D photos"):
        recipe_from_dict({"data": {"layout": "voc", "root": "x", "num_classes": 21, "class_names": ["c"] * 20}, "model": {"spatial_dims": 3}}, "r.yaml")


def test_saved_recipe_leaves_derived_values_unset(tmp_path):
    """recipe.yaml must not freeze unlabeled_batch_size at the value derived from batch_size: a run
    resumed from its directory with --set train.batch_size=4 derives it again; a value the recipe
    sets itself is kept."""
    recipe = load_recipe(write(tmp_path, {"data": {"root": "somewhere"}, "train": {"batch_size": 6}}))
    assert recipe.train.unlabeled_batch_size == 6
    saved = yaml.safe_load(recipe.to_yaml())
    assert saved["train"]["unlabeled_batch_size"] is None
    assert load_recipe(write(tmp_path, saved), ["train.batch_size=4"]).train.unlabeled_batch_size == 4
    explicit = load_recipe(write(tmp_path, {"data": {"root": "somewhere"}, "train": {"batch_size": 6, "unlabeled_batch_size": 8}}))
    assert yaml.safe_load(explicit.to_yaml())["train"]["unlabeled_batch_size"] == 8


def test_set_train_epochs_still_replaces_the_recipes_iterations(tmp_path):
    path = write(tmp_path, {"data": {"root": "somewhere"}, "train": {"iterations": 100}})
    recipe = load_recipe(path, ["train.epochs=3"])
    assert (recipe.train.epochs, recipe.train.iterations) == (3, 100)  # the trainer sets iterations from epochs
    both_cleared = load_recipe(REPO / "recipes" / "voc.yaml", ["train.epochs=null", "train.iterations=2"])
    assert (both_cleared.train.epochs, both_cleared.train.iterations) == (None, 2)
