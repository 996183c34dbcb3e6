"""Domain adaptation: labeled cases from one source, unlabeled cases from another, held-out cases of both.

A recipe's ``data.labeled`` (the source domain) and ``data.unlabeled`` (the target domain) each name a
layout and where it lives. The labeled source gives the labeled training cases (the first
``num_labeled`` of its ACDC labeled order or of its datalist's labeled training entries, default all);
the unlabeled source gives every training case of its own, labels dropped. Both give their validation
and test cases, tagged with their domain, so that validation and evaluation report each domain separately.

Domain names: ``domain`` in the source's recipe section, else the vendor (M&Ms), else ``source`` /
``target``. Each domain belongs to one side ("role"): the roles are what model selection and the
summary use (``dice_mean/target``), the domains what the per-vendor breakdown uses.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from maskmatch_med.config import DataConfig, DomainSourceConfig
from maskmatch_med.data.acdc import FrameCollector, acdc_splits, listed_patients, missing_patients, patient_dirs
from maskmatch_med.data.checks import require_clean
from maskmatch_med.data.cases import Case, Splits
from maskmatch_med.data.datalist import datalist_splits
from maskmatch_med.data.mnms import mnms_cases
from maskmatch_med.errors import UserError

SOURCE, TARGET = "source", "target"


def _acdc_target(root: Path, manifest: Path, key: str) -> Splits:
    """An ACDC-layout target: val.txt / test.txt from the manifest, every other patient unlabeled
    (no labeled_order.txt needed: nothing of the target is trained on with labels). Layout problems
    are listed together, one line each, as for a plain ACDC recipe."""
    root = Path(root)
    if not root.is_dir():
        # The demo's two phantoms are written by the synth commands at the top of recipes/da_demo.yaml.
        raise UserError(f"{key}.root: {root} is not a directory (recipes/da_demo.yaml: its first lines write both phantoms)")
    present = patient_dirs(root, f"{key}.root")
    problems: list[str] = []
    held = {}
    for name in ("val.txt", "test.txt"):
        ids = listed_patients(Path(manifest) / name, problems) if (Path(manifest) / name).is_file() else []
        problems += missing_patients(Path(manifest) / name, ids, present, root)
        held[name] = ids
    frames = FrameCollector(present, problems)
    splits = Splits()
    splits.validation = frames.of(held["val.txt"])
    splits.test = frames.of(held["test.txt"])
    held_out = set(held["val.txt"]) | set(held["test.txt"])
    # With their label paths: the caller drops them for a target, keeps them for a fully labeled source.
    splits.unlabeled = frames.of(pid for pid in present if pid not in held_out)
    require_clean(problems)
    return splits


def _source_splits(source: DomainSourceConfig, role: str, key: str) -> Splits:
    """One source's cases for its role: labeled (source) or unlabeled (target) training cases, plus
    its validation and test cases; every case tagged with its domain."""
    if source.layout == "acdc":
        manifest = Path(source.manifest)
        if role == TARGET or not (manifest / "labeled_order.txt").is_file():
            splits = _acdc_target(source.root, manifest, key)
            if role == SOURCE:  # no labeled order: every training patient of the source is labeled
                splits.labeled, splits.unlabeled = splits.unlabeled, []
        else:
            splits = acdc_splits(source.root, manifest, source.num_labeled)
    elif source.layout == "datalist":
        splits = datalist_splits(source.datalist, source.num_labeled if role == SOURCE else "all")
    else:
        by_split = mnms_cases(source.root, source.csv, source.vendors, source.manifest, source.domain, key=f"{key}.root")
        splits = Splits(
            labeled=[c for c in by_split["training"] if c.label is not None],
            unlabeled=[c for c in by_split["training"] if c.label is None],
            validation=by_split["validation"],
            test=by_split["test"],
        )

    def tagged(cases: list[Case], **changes) -> list[Case]:
        # M&Ms cases already carry their vendor (or the recipe's domain name).
        domain = {} if source.layout == "mnms" else {"domain": source.domain or role}
        return [dataclasses.replace(c, **domain, **changes) for c in cases]

    held_out = {"validation": tagged(splits.validation), "test": tagged(splits.test)}
    if role == SOURCE:  # the source's own unlabeled cases are not used: the unlabeled data is the target's
        return Splits(labeled=tagged(splits.labeled), **held_out)
    # Every training case of the target is unlabeled; labels it may have are never trained on.
    unlabeled = [
        dataclasses.replace(c, label=None, audit_label=c.label if c.label is not None and c.label.is_file() else c.audit_label)
        for c in tagged(splits.labeled + splits.unlabeled)
    ]
    return Splits(unlabeled=unlabeled, **held_out)


def domain_splits(data: DataConfig) -> Splits:
    """The splits of a domain-adaptation recipe, with `domain_roles` naming each domain's side."""
    source = _source_splits(data.labeled, SOURCE, "data.labeled")
    target = _source_splits(data.unlabeled, TARGET, "data.unlabeled")
    roles: dict[str, str] = {}
    for role, splits, key in ((SOURCE, source, "data.labeled"), (TARGET, target, "data.unlabeled")):
        for name, cases in splits.items():
            for case in cases:
                if roles.setdefault(case.domain, role) != role:
                    raise UserError(
                        f"{key}: domain {case.domain!r} also names cases of the other side; give the sources "
                        f"different domain names ({key}.domain)"
                    )
    if TARGET in roles and roles[TARGET] != TARGET or SOURCE in roles and roles[SOURCE] != SOURCE:
        raise UserError("data.labeled.domain / data.unlabeled.domain: 'source' names the labeled side and 'target' the unlabeled one")
    source_cases = {c.case_id: c.image for _, cases in source.items() for c in cases}
    for _, cases in target.items():
        for case in cases:
            if case.case_id in source_cases:
                raise UserError(
                    f"case {case.case_id} is in data.labeled ({source_cases[case.case_id]}) and in data.unlabeled "
                    f"({case.image}); case names must differ between the sources (predictions and reports are named after them)"
                )
    return Splits(
        labeled=source.labeled,
        unlabeled=target.unlabeled,
        validation=source.validation + target.validation,
        test=source.test + target.test,
        domain_roles=roles,
    )


def domain_table(splits: Splits) -> list[dict[str, str]]:
    """One row per validation and test case: case, domain, role, split (what `evaluate --domains` reads)."""
    return [
        {"case": c.case_id, "domain": c.domain, "role": splits.domain_roles.get(c.domain, ""), "split": name}
        for name in ("validation", "test")
        for c in getattr(splits, name)
    ]


def read_domain_map(path: Path) -> dict[str, str]:
    """case -> domain from a CSV with a header holding `case` and `domain` columns."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--domains: {path} not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            fields = [f.strip() for f in reader.fieldnames or []]
            if "case" not in fields or "domain" not in fields:
                raise UserError(f"{path}: needs a header with 'case' and 'domain' columns, got {', '.join(fields) or 'none'}")
            reader.fieldnames = fields
            mapping: dict[str, str] = {}
            for line, row in enumerate(reader, start=2):
                case, domain = (row.get("case") or "").strip(), (row.get("domain") or "").strip()
                if not case or not domain:
                    raise UserError(f"{path}: line {line}: empty case or domain")
                if mapping.setdefault(case, domain) != domain:
                    raise UserError(f"{path}: line {line}: case {case} given two domains ({mapping[case]}, {domain})")
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: cannot read as CSV ({error})") from None
    return mapping


def recipe_domain_map(recipe_path: Path) -> dict[str, str]:
    """case -> domain for the validation and test cases of a domain-adaptation recipe (or run directory)."""
    from maskmatch_med.config import load_recipe

    recipe_path = Path(recipe_path)
    if recipe_path.is_dir():
        recipe_path = recipe_path / "recipe.yaml"
    recipe = load_recipe(recipe_path)
    if not recipe.data.domain_adaptation:
        raise UserError(f"{recipe_path}: not a domain-adaptation recipe (no data.labeled / data.unlabeled)")
    return {row["case"]: row["domain"] for row in domain_table(domain_splits(recipe.data))}


def load_domain_map(path: Path) -> dict[str, str]:
    """`evaluate --domains PATH`: a case,domain CSV, or a domain-adaptation recipe YAML or run directory."""
    path = Path(path)
    if path.is_dir() or path.suffix.lower() in (".yaml", ".yml"):
        return recipe_domain_map(path)
    return read_domain_map(path)
