"""Bring-your-own data: a MONAI (Decathlon-style) datalist JSON.

    {"training":   [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}, ...],
     "unlabeled":  [{"image": "imagesUn/b.nii.gz"}, ...],
     "validation": [{"image": ..., "label": ...}, ...],
     "test":       [{"image": ..., "label": ...}, ...]}

Paths are relative to the JSON file's directory (MONAI's `base_dir` convention) and must stay
inside it. Training entries without a label count as unlabeled too.
"""

from __future__ import annotations

import json
from pathlib import Path

from maskmatch_med.data.cases import Case, Splits
from maskmatch_med.errors import UserError

SECTIONS = ("training", "unlabeled", "validation", "test")


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


def datalist_splits(datalist: Path) -> Splits:
    datalist = Path(datalist)
    if not datalist.is_file():
        raise UserError(f"data.datalist: {datalist} not found")
    try:
        content = json.loads(datalist.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{datalist}: not valid JSON (line {error.lineno})") from None
    if not isinstance(content, dict):
        raise UserError(f"{datalist}: expected an object with sections {', '.join(SECTIONS)}")
    unknown = sorted(set(content) - set(SECTIONS))
    if unknown:
        raise UserError(f"{datalist}: unknown section {unknown[0]!r} (sections: {', '.join(SECTIONS)})")
    base = datalist.parent
    splits = Splits()
    seen: set[str] = set()
    for section in SECTIONS:
        entries = content.get(section, [])
        if not isinstance(entries, list):
            raise UserError(f"{datalist}: section {section!r} must be a list")
        for index, entry in enumerate(entries):
            where = f"{datalist}: {section}[{index}]"
            if not isinstance(entry, dict) or "image" not in entry:
                raise UserError(f"{where}: expected {{\"image\": ..., \"label\": ...}}")
            image = _resolve(base, entry["image"], f"{where}.image")
            label = _resolve(base, entry["label"], f"{where}.label") if entry.get("label") else None
            if section in ("validation", "test") and label is None:
                raise UserError(f"{where}: {section} entries need a label")
            if section == "unlabeled":  # a label given here is only read to log pseudo-label quality
                case = Case(_case_id(image), image, None, _case_id(image), audit_label=label)
            else:
                case = Case(_case_id(image), image, label, _case_id(image))
            if case.case_id in seen:
                raise UserError(f"{where}: {image.name} appears twice in the datalist")
            seen.add(case.case_id)
            if section == "training":
                (splits.labeled if label else splits.unlabeled).append(case)
            else:
                getattr(splits, section).append(case)
    return splits
