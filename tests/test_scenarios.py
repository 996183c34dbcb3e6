"""The scenarios (issue 15): which one a recipe or checkpoint gets, what each declares, the one-line
refusal of a predict option a scenario cannot honour, and the import rules that keep the layout true
(the engine imports no scenario, method/ nothing from engine/, no import cycles)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from maskmatch_med.config import Recipe, load_recipe
from maskmatch_med.errors import UserError
from maskmatch_med.scenarios.base import OPTIONAL_FEATURES, PredictOptions, TrainedModel
from maskmatch_med.scenarios.registry import PHOTOS, SCENARIOS, SLICES, VOLUMES, scenario_for

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "maskmatch_med"


@pytest.mark.parametrize("recipe, scenario", [
    ("demo.yaml", SLICES), ("acdc.yaml", SLICES), ("datalist2d.yaml", SLICES), ("da_demo.yaml", SLICES),
    ("acdc_to_mnms.yaml", SLICES), ("demo3d.yaml", VOLUMES), ("acdc3d.yaml", VOLUMES), ("datalist3d.yaml", VOLUMES),
    ("voc.yaml", PHOTOS), ("cityscapes.yaml", PHOTOS),
])
def test_every_recipe_gets_its_scenario(recipe, scenario):
    assert scenario_for(load_recipe(REPO / "recipes" / recipe)) is scenario


def test_spatial_dims_alone_moves_a_volume_recipe_between_slices_and_volumes():
    recipe = load_recipe(REPO / "recipes" / "demo.yaml", ["model.spatial_dims=3"])
    assert scenario_for(recipe) is VOLUMES


def test_a_checkpoint_gets_the_scenario_of_its_recipe(tmp_path):
    """predict picks the scenario from the recipe saved in the checkpoint, not from the inputs."""
    recipe = load_recipe(REPO / "recipes" / "voc.yaml")
    path = tmp_path / "best.pt"
    torch.save({"format_version": 1, "recipe": recipe.to_yaml(), "num_classes": 21, "spatial_dims": 2, "inference": {}}, path)
    trained = TrainedModel.load(path, torch.device("cpu"))
    assert scenario_for(trained.recipe) is PHOTOS and trained.recipe.data.layout == "voc"


def test_each_scenario_declares_its_interface():
    assert [s.name for s in SCENARIOS] == ["slices", "volumes", "photos"]
    for scenario in SCENARIOS:
        assert scenario.title and scenario.outputs and scenario.in_channels in (1, 3)
        assert scenario.predict_options <= set(OPTIONAL_FEATURES)
        for key in scenario.recipe_keys:  # every declared recipe key exists in the schema
            section, _, field = key.partition(".")
            assert section in Recipe.model_fields, key
            assert not field or field in Recipe.model_fields[section].annotation.model_fields, key


def test_nifti_scenarios_honour_every_predict_option():
    every = PredictOptions(scales=(0.75, 1.0), png=True, largest_component=True, probabilities=True, uncertainty=True)
    assert set(every.asked()) == set(OPTIONAL_FEATURES)
    for scenario in (SLICES, VOLUMES):
        scenario.refuse_unsupported(every)


def test_photos_refuse_what_they_cannot_write_in_one_line():
    PHOTOS.refuse_unsupported(PredictOptions(scales=(0.75, 1.0), largest_component=True, skip_existing=True, progress=True))
    with pytest.raises(UserError) as refused:
        PHOTOS.refuse_unsupported(PredictOptions(png=True, probabilities=True, largest_component=True))
    message = str(refused.value)
    assert "\n" not in message and message.startswith("--png, --probabilities: not available in the photos scenario")
    assert "palette PNGs" in message and "--largest-component" not in message


# ------------------------------------------------------------------------------------------ import rules


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module of the package -> the package modules it imports, at the top or inside a function."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("maskmatch_med"):
                for alias in node.names:  # `from maskmatch_med.method import steps` imports the module steps
                    child = f"{node.module}.{alias.name}"
                    found.add(child if child in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names if alias.name.startswith("maskmatch_med"))
        graph[name] = found & modules.keys()
    return graph


def test_the_engine_imports_no_scenario():
    offending = {m: sorted(i for i in imports if i.startswith("maskmatch_med.scenarios"))
                 for m, imports in _imports().items() if m.startswith("maskmatch_med.engine")}
    assert not {m: i for m, i in offending.items() if i}


def test_method_imports_nothing_from_the_engine_or_a_scenario():
    offending = {m: sorted(i for i in imports if i.startswith(("maskmatch_med.engine", "maskmatch_med.scenarios")))
                 for m, imports in _imports().items() if m.startswith("maskmatch_med.method")}
    assert not {m: i for m, i in offending.items() if i}


def test_evaluation_stands_apart_from_training():
    offending = {m: sorted(i for i in imports if i.startswith(("maskmatch_med.scenarios", "maskmatch_med.method", "maskmatch_med.engine.trainer")))
                 for m, imports in _imports().items() if m.startswith("maskmatch_med.evaluation")}
    assert not {m: i for m, i in offending.items() if i}


def test_no_import_cycles():
    graph = _imports()
    cycles, state = [], {}  # state: 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                cycles.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported, path + [imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles
