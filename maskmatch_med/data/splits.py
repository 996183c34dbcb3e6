"""Recipe -> Splits, whatever the layout; and the classes a datalist's `labels` give the recipe."""

from __future__ import annotations

from pathlib import Path

from maskmatch_med.config import DataConfig, Recipe
from maskmatch_med.data.acdc import acdc_splits
from maskmatch_med.data.cases import Splits
from maskmatch_med.data.datalist import datalist_class_names, datalist_splits, read_datalist
from maskmatch_med.errors import UserError


def resolve_splits(data: DataConfig, semi_supervised: bool = False) -> Splits:
    """The cases of every role. For a single-source datalist, a missing validation or (when
    `semi_supervised`) unlabeled role is one line saying what to add, before any image is read."""
    if data.domain_adaptation:
        from maskmatch_med.data.domains import domain_splits

        return domain_splits(data)
    if data.layout == "acdc":
        return acdc_splits(data.root, data.manifest, data.num_labeled)
    splits = datalist_splits(data.datalist, data.num_labeled, data.val_count, data.val_seed)
    require_datalist_roles(splits, Path(data.datalist), semi_supervised)
    return splits


def require_datalist_roles(splits: Splits, datalist: Path, semi_supervised: bool) -> None:
    """Name the section or recipe key that gives the missing cases (the Decathlon's dataset.json has
    no validation section and no unlabeled one)."""
    if not splits.validation:
        what = "empty" if read_datalist(datalist).get("validation") is not None else "missing"
        raise UserError(
            f"{datalist}: section 'validation' is {what}; add labeled 'validation' entries, or hold out labeled "
            "'training' cases with data.val_count=N (seeded by data.val_seed)"
        )
    if semi_supervised and not splits.unlabeled:
        raise UserError(
            f"{datalist}: no unlabeled images ('unlabeled' entries, 'test' images or 'training' entries without a label); "
            f"add some, set data.num_labeled below the {len(splits.labeled)} labeled training cases, or use method.name=supervised"
        )


def _datalists(data: DataConfig) -> list[Path]:
    """Every datalist the recipe reads (the labeled source's first in domain adaptation)."""
    if data.domain_adaptation:
        return [Path(source.datalist) for source in (data.labeled, data.unlabeled) if source.layout == "datalist"]
    return [Path(data.datalist)] if data.layout == "datalist" else []


def _recipe_sets_classes(data: DataConfig) -> bool:
    return bool({"num_classes", "class_names"} & data.model_fields_set)


def _with_classes(recipe: Recipe, names: list[str]) -> Recipe:
    """A copy of the recipe with num_classes and class_names (foreground) from `names`, background first."""
    data = DataConfig.model_validate({**recipe.data.model_dump(), "num_classes": len(names), "class_names": names[1:]})
    return recipe.model_copy(update={"data": data})


def _reconcile(recipe: Recipe, names: list[str], datalist: Path) -> tuple[Recipe, str | None]:
    """The recipe's classes against one datalist's `labels`: taken from the file when the recipe does
    not set them; a different count is an error (the network's outputs and the label values would not
    match); different names with the same count are a note (the recipe's names are kept)."""
    data = recipe.data
    if not _recipe_sets_classes(data):
        return _with_classes(recipe, names), f"classes from {datalist} labels: {', '.join(names)}"
    if data.num_classes != len(names):
        raise UserError(
            f"{datalist}: labels names {len(names)} classes ({', '.join(names)}) but the recipe sets data.num_classes={data.num_classes} "
            f"({', '.join(['background', *data.class_names])}); set data.num_classes={len(names)} and "
            f"data.class_names=[{', '.join(names[1:])}], or remove both from the recipe to take the file's"
        )
    if "class_names" not in data.model_fields_set:
        return _with_classes(recipe, names), f"class names from {datalist} labels: {', '.join(names[1:])}"
    if [n.casefold() for n in data.class_names] != [n.casefold() for n in names[1:]]:
        return recipe, f"data.class_names [{', '.join(data.class_names)}] differ from {datalist} labels [{', '.join(names[1:])}]; using the recipe's"
    return recipe, None


def resolve_datalist_classes(recipe: Recipe) -> tuple[Recipe, list[str]]:
    """The recipe with its classes reconciled with every datalist's `labels` (see `_reconcile`), and
    one note per decision worth telling the user. Layouts without a datalist pass through unchanged."""
    notes = []
    for datalist in _datalists(recipe.data):
        names = datalist_class_names(datalist)
        if names is None:
            continue
        recipe, note = _reconcile(recipe, names, datalist)
        if note:
            notes.append(note)
    return recipe, notes
