"""The ACDC layout: `<root>/patientNNN/patientNNN_frameXX.nii.gz` (+ `_gt`) for the ED and ES frames,
described by `<root>/patientNNN/Info.cfg`.

The semi-supervised protocol (validation, test and labeled-order patient lists) lives in plain-text
manifest files, one patient id per line, `#` starting a comment.
"""

from __future__ import annotations

from pathlib import Path

from maskmatch_med.data.cases import Case, Splits
from maskmatch_med.data.checks import require_clean
from maskmatch_med.errors import UserError

MANIFEST_FILES = ("val.txt", "test.txt", "labeled_order.txt")


def read_info_cfg(path: Path) -> dict[str, str]:
    """`Key: value` lines of an ACDC Info.cfg."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise UserError(f"{path}: cannot read Info.cfg ({error.strerror})") from None
    info = {}
    for line in lines:
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def patient_frames(patient_dir: Path) -> list[Case]:
    """The ED and ES frames of one patient, as listed in its Info.cfg."""
    patient = patient_dir.name
    info_path = patient_dir / "Info.cfg"
    if not info_path.is_file():
        raise UserError(f"{info_path}: missing (needed for the ED/ES frame numbers)")
    info = read_info_cfg(info_path)
    cases = []
    for phase in ("ED", "ES"):
        try:
            frame = int(info[phase])
        except (KeyError, ValueError):
            raise UserError(f"{info_path}: no valid '{phase}: <frame>' line") from None
        stem = f"{patient}_frame{frame:02d}"
        cases.append(Case(stem, patient_dir / f"{stem}.nii.gz", patient_dir / f"{stem}_gt.nii.gz", patient))
    return cases


def read_patient_list(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"{path}: manifest file not found")
    ids = []
    for line in path.read_text().splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            ids.append(entry)
    if len(set(ids)) != len(ids):
        raise UserError(f"{path}: lists a patient twice")
    return ids


def missing_root(root: Path, key: str) -> str:
    """The line for an ACDC root that is not there, with the two ways to get one: a newcomer running
    recipes/demo.yaml before `synth` meets this first."""
    state = "is not a directory" if Path(root).exists() else "does not exist"
    return (
        f"{key}: {root} {state}; point {key} at the folder holding patientNNN/ folders, or write the demo's "
        f"phantom there first: `maskmatch-med synth acdc --out {root} --patients 30` (or run `make demo`)"
    )


def patient_dirs(root: Path, key: str) -> dict[str, Path]:
    """The `patientNNN/` folders under an ACDC root, by name; a root that is missing or holds none is
    refused at once (nothing else about the layout can be checked without them)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(missing_root(root, key))
    present = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and p.name.startswith("patient")}
    if not present:
        raise UserError(f"{key}: no patientNNN directories under {root}")
    return present


def listed_patients(path: Path, problems: list[str]) -> list[str]:
    """read_patient_list, noting a missing or bad list in `problems` (as no patients) so that the
    other layout problems are still found and listed with it."""
    try:
        return read_patient_list(path)
    except UserError as error:
        problems.append(str(error))
        return []


def missing_patients(listing: Path, ids: list[str], present: dict[str, Path], root: Path) -> list[str]:
    """One line per patient that the manifest file `listing` names and `root` does not hold."""
    return [f"{listing}: {pid} not found under {root}" for pid in ids if pid not in present]


class FrameCollector:
    """The frames of listed patients, noting each missing or unreadable Info.cfg in `problems` instead
    of stopping at the first, as the file checks list every bad file; patients already reported
    missing are left out."""

    def __init__(self, present: dict[str, Path], problems: list[str]) -> None:
        self.present, self.problems = present, problems

    def of(self, ids) -> list[Case]:
        cases = []
        for pid in ids:
            if pid not in self.present:
                continue
            try:
                cases += patient_frames(self.present[pid])
            except UserError as error:
                self.problems.append(str(error))
        return cases


def acdc_splits(root: Path, manifest: Path, num_labeled: int | str) -> Splits:
    """Resolve the manifest's patient lists against the patients found under `root`.

    Training patients are those in neither the validation nor the test list; the first
    `num_labeled` of labeled_order.txt are labeled (`"all"`: every training patient), the rest
    contribute their frames as unlabeled cases. Layout problems (missing manifest files or listed
    patients, Info.cfg files, overlapping lists) are all collected and raised together, one line each.
    """
    root, manifest = Path(root), Path(manifest)
    present = patient_dirs(root, "data.root")
    problems: list[str] = []
    validation, test, order = (listed_patients(manifest / name, problems) for name in MANIFEST_FILES)
    used_order = order if num_labeled == "all" else order[:num_labeled]
    for name, ids in (("val.txt", validation), ("test.txt", test), ("labeled_order.txt", used_order)):
        problems += missing_patients(manifest / name, ids, present, root)
    held_out = set(validation) | set(test)
    if set(validation) & set(test):
        problems.append(f"{manifest}: val.txt and test.txt share patients")
    leaked = [pid for pid in order if pid in held_out]
    if leaked:
        problems.append(f"{manifest / 'labeled_order.txt'}: {', '.join(leaked)} also in val/test")

    training = [pid for pid in present if pid not in held_out]
    if num_labeled == "all":
        labeled_ids = order + [pid for pid in training if pid not in order]
    else:
        if num_labeled > len(order) and (manifest / "labeled_order.txt").is_file():
            problems.append(f"data.num_labeled: {num_labeled} but {manifest / 'labeled_order.txt'} lists {len(order)} patients")
        labeled_ids = order[:num_labeled]

    frames = FrameCollector(present, problems)
    splits = Splits()
    splits.labeled = frames.of(labeled_ids)
    splits.unlabeled = [
        Case(c.case_id, c.image, None, c.group, audit_label=c.label if c.label.is_file() else None)
        for c in frames.of(pid for pid in training if pid not in labeled_ids)
    ]
    splits.validation = frames.of(validation)
    splits.test = frames.of(test)
    require_clean(problems)
    return splits
