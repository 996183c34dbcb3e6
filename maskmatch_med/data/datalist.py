"""Bring-your-own data: a MONAI (Decathlon-style) datalist JSON, including the Medical Segmentation
Decathlon's own `dataset.json` as downloaded.

    {"training":   [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}, ...],
     "unlabeled":  [{"image": "imagesUn/b.nii.gz"}, ...],
     "validation": [{"image": ..., "label": ...}, ...],
     "test":       ["./imagesTs/c.nii.gz", {"image": ..., "label": ...}, ...],
     "labels":     {"0": "background", "1": "left atrium"},
     "modality":   {"0": "MRI"},
     "name": ..., "description": ..., "reference": ..., "licence": ..., "release": ..., ...}

Paths are relative to the JSON file's directory (MONAI's `base_dir` convention; `./` prefixes are
fine) and must stay inside it. Roles:

- `training` entries with a label are labeled cases, without one unlabeled cases;
- `unlabeled` entries are unlabeled cases (a label given there is read only to log pseudo-label quality);
- `validation` entries need a label;
- `test` entries with a label are held-out test cases; plain path strings (the Decathlon's form) and
  entries without a label are unlabeled images: unlabeled data for semi-supervised training and the
  natural inputs of `predict --datalist`.

Of the Decathlon metadata, `labels` gives the class count and names (data/splits.py reconciles them
with the recipe) and `modality` is checked to be a single channel; the other keys (METADATA) are
descriptive and ignored. Any other top-level key is an error naming it, so that a typo such as
`"validaton"` does not silently drop a section.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from maskmatch_med.data.cases import Case, Splits
from maskmatch_med.errors import UserError

SECTIONS = ("training", "unlabeled", "validation", "test")
# Descriptive Decathlon keys, with the spellings found in the published files ("relase" in several
# tasks, "license" in derived datalists such as MONAI's BTCV json).
METADATA = (
    "name", "description", "reference", "licence", "license", "release", "relase", "tensorImageSize",
    "numTraining", "numValidation", "numTest",
)
USED_METADATA = ("labels", "modality")


def _case_id(image: Path) -> str:
    name = image.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return image.stem


def _resolve(base: Path, value: object, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise UserError(f"{where}: expected a relative path string")
    path = (base / value).resolve()
    if base.resolve() not in path.parents:
        raise UserError(f"{where}: {value} lies outside the datalist's directory {base}")
    return path


def read_datalist(datalist: Path) -> dict:
    """The JSON object of a datalist, its top-level keys and `modality` checked; one-line errors
    naming the file and key, before any image is read."""
    datalist = Path(datalist)
    if not datalist.is_file():
        raise UserError(f"data.datalist: {datalist} not found")
    try:
        content = json.loads(datalist.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{datalist}: not valid JSON (line {error.lineno})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{datalist}: cannot read ({error})") from None
    if not isinstance(content, dict):
        raise UserError(f"{datalist}: expected an object with sections {', '.join(SECTIONS)}")
    known = set(SECTIONS) | set(METADATA) | set(USED_METADATA)
    unknown = [key for key in content if key not in known]
    if unknown:
        raise UserError(
            f"{datalist}: unknown section {unknown[0]!r} (sections: {', '.join(SECTIONS)}; "
            f"Decathlon metadata: {', '.join(USED_METADATA + METADATA)})"
        )
    _require_one_channel(content.get("modality"), datalist)
    return content


def _require_one_channel(modality: object, datalist: Path) -> None:
    """Images are read as one channel; a multi-channel task (BraTS: FLAIR, T1w, ...) would otherwise
    fail later at its first 4D image, or train on a channel nobody chose."""
    if modality is None:
        return
    if not isinstance(modality, dict) or not modality:
        raise UserError(f"{datalist}: modality: expected {{\"0\": \"MRI\"}} (channel index -> name)")
    if len(modality) > 1:
        names = ", ".join(str(name) for name in modality.values())
        raise UserError(
            f"{datalist}: modality lists {len(modality)} channels ({names}); multi-channel input is not supported yet, "
            "only single-channel images (one 'modality' entry)"
        )


def datalist_class_names(datalist: Path) -> list[str] | None:
    """Every class's name from the datalist's `labels` ({"0": "background", "1": ...}), index order,
    background included; None when the file has no `labels`."""
    labels = read_datalist(datalist).get("labels")
    if labels is None:
        return None
    expected = f"{datalist}: labels: expected {{\"0\": \"background\", \"1\": \"...\"}} with keys 0..N-1 and name strings"
    if not isinstance(labels, dict):
        raise UserError(expected)
    try:
        by_index = {int(key): value for key, value in labels.items()}
    except ValueError:
        raise UserError(expected) from None
    if sorted(by_index) != list(range(len(labels))) or not all(isinstance(v, str) and v.strip() for v in by_index.values()):
        raise UserError(expected)
    if len(by_index) < 2:
        raise UserError(f"{datalist}: labels: names {len(by_index)} class; a segmentation needs background and at least one class")
    return [by_index[index].strip() for index in range(len(by_index))]


def _entry_case(base: Path, entry: object, where: str) -> tuple[Path, Path | None]:
    """(image, label or None) of one entry: {"image": ..., "label": ...} or a plain image path."""
    if isinstance(entry, str):
        return _resolve(base, entry, where), None
    if not isinstance(entry, dict) or "image" not in entry:
        raise UserError(f"{where}: expected {{\"image\": ..., \"label\": ...}}")
    image = _resolve(base, entry["image"], f"{where}.image")
    label = _resolve(base, entry["label"], f"{where}.label") if entry.get("label") else None
    return image, label


def _section_entries(content: dict, section: str, datalist: Path) -> list:
    entries = content.get(section, [])
    if not isinstance(entries, list):
        raise UserError(f"{datalist}: section {section!r} must be a list")
    return entries


def section_images(datalist: Path, section: str) -> list[Path]:
    """The image paths of one section, in file order (`predict --datalist FILE --section NAME`)."""
    datalist = Path(datalist)
    content = read_datalist(datalist)
    if section not in content:
        raise UserError(f"{datalist}: no section {section!r} (sections here: {', '.join(s for s in SECTIONS if s in content) or 'none'})")
    entries = _section_entries(content, section, datalist)
    if not entries:
        raise UserError(f"{datalist}: section {section!r} is empty")
    return [_entry_case(datalist.parent, entry, f"{datalist}: {section}[{index}]")[0] for index, entry in enumerate(entries)]


def held_out_ids(cases: list[Case], count: int, seed: int) -> set[str]:
    """Case ids of `count` cases drawn with `seed` from the cases sorted by id: the same file and seed
    give the same validation cases whatever the entries' order, and num_labeled does not move them."""
    ids = sorted(case.case_id for case in cases)
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[i] for i in order[:count]}


def _read_cases(datalist: Path) -> dict[str, list[Case]]:
    """Every entry as a Case, by section (test split into labeled `test` and unlabeled `test_images`);
    case ids must be unique across the file."""
    content = read_datalist(datalist)
    base = datalist.parent
    cases: dict[str, list[Case]] = {name: [] for name in (*SECTIONS, "test_images")}
    seen: set[str] = set()
    for section in SECTIONS:
        for index, entry in enumerate(_section_entries(content, section, datalist)):
            where = f"{datalist}: {section}[{index}]"
            image, label = _entry_case(base, entry, where)
            if section == "validation" and label is None:
                raise UserError(f"{where}: validation entries need a label")
            case_id = _case_id(image)
            if case_id in seen:
                raise UserError(f"{where}: {image.name} appears twice in the datalist")
            seen.add(case_id)
            if section == "unlabeled":  # a label given here is only read to log pseudo-label quality
                cases[section].append(Case(case_id, image, None, case_id, audit_label=label))
            else:
                cases["test_images" if section == "test" and label is None else section].append(Case(case_id, image, label, case_id))
    return cases


def _hold_out(datalist: Path, cases: dict[str, list[Case]], val_count: int, seed: int) -> tuple[list[Case], list[Case]]:
    """(remaining labeled, validation): `val_count` labeled training cases held out for validation."""
    labeled = [c for c in cases["training"] if c.label is not None]
    if cases["validation"]:
        raise UserError(f"data.val_count: {datalist} already has a 'validation' section; use it or data.val_count, not both")
    if val_count >= len(labeled):
        raise UserError(f"data.val_count: {val_count} but {datalist} has {len(labeled)} labeled training cases; leave at least one to train on")
    held = held_out_ids(labeled, val_count, seed)
    return [c for c in labeled if c.case_id not in held], sorted((c for c in labeled if c.case_id in held), key=lambda c: c.case_id)


def datalist_splits(datalist: Path, num_labeled: int | str = "all", val_count: int = 0, val_seed: int = 0) -> Splits:
    """The cases of a datalist by role.

    `val_count` labeled training cases (drawn with `val_seed`) become validation cases; of the rest,
    the first `num_labeled` labeled training entries in file order stay labeled (`"all"`: every one)
    and the others are used unlabeled, their labels kept only for the pseudo-label quality logs, so a
    semi-supervised experiment needs no edited copy of the file.
    """
    datalist = Path(datalist)
    cases = _read_cases(datalist)
    labeled = [c for c in cases["training"] if c.label is not None]
    validation = cases["validation"]
    if val_count:
        labeled, validation = _hold_out(datalist, cases, val_count, val_seed)
    if num_labeled != "all" and num_labeled > len(labeled):
        by_hold_out = f" ({val_count} held out by data.val_count)" if val_count else ""
        raise UserError(f"data.num_labeled: {num_labeled} but {datalist} has {len(labeled)} labeled training cases{by_hold_out}")
    kept = {c.case_id for c in (labeled if num_labeled == "all" else labeled[:num_labeled])}
    held_ids = {c.case_id for c in validation}
    unlabeled = [
        c if c.label is None else Case(c.case_id, c.image, None, c.group, audit_label=c.label)
        for c in cases["training"] if c.case_id not in kept and c.case_id not in held_ids
    ]
    return Splits(
        labeled=[c for c in labeled if c.case_id in kept],
        unlabeled=unlabeled + cases["unlabeled"] + cases["test_images"],
        validation=validation,
        test=cases["test"],
    )
