"""The M&Ms multi-vendor cardiac layout (Campello et al., IEEE TMI 2021), read as ED and ES 3D cases.

Official tree (the splits come from the folders)::

    <root>/Training/Labeled/<code>/<code>_sa.nii.gz, <code>_sa_gt.nii.gz
    <root>/Training/Unlabeled/<code>/<code>_sa.nii.gz
    <root>/Validation/<code>/...      <root>/Testing/<code>/...

or a flat tree ``<root>/<code>/...`` (every case is a training case unless the optional manifest's
``val.txt`` / ``test.txt`` list its code). Images and label maps are 4D (x, y, z, t); only the ED and
ES time points are labeled. Their time indices (0-based), the vendor and the centre come from the
dataset information CSV (``211230_M&Ms_Dataset_information_diagnosis_opendataset.csv``: columns
``External code, VendorName, Vendor, Centre, ED, ES, ...``). Each ED/ES frame becomes one case
``<code>_ED`` / ``<code>_ES``, whose domain is the vendor code (A Siemens, B Philips, C GE, D Canon).

M&Ms labels are 1 LV, 2 myocardium, 3 RV: the reverse of ACDC's 1 RV, 2 myocardium, 3 LV. They are
remapped to ACDC's order when read, so models trained on ACDC and on M&Ms share one class order.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from maskmatch_med.data.acdc import read_patient_list
from maskmatch_med.data.cases import Case
from maskmatch_med.errors import UserError

# Stored M&Ms value -> ACDC class: 0 background, 1 LV -> 3, 2 Myo -> 2, 3 RV -> 1.
MNMS_TO_ACDC = (0, 3, 2, 1)
REQUIRED_COLUMNS = ("External code", "Vendor", "Centre", "ED", "ES")
OFFICIAL_FOLDERS = {  # folder under root -> split
    "Training/Labeled": "training",
    "Training/Unlabeled": "training",
    "Validation": "validation",
    "Testing": "test",
}


@dataclass(frozen=True)
class MnmsSubject:
    code: str
    vendor: str
    centre: str
    ed: int
    es: int


def read_mnms_csv(path: Path) -> dict[str, MnmsSubject]:
    """Subjects by external code, from the dataset information CSV."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: M&Ms information CSV not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.DictReader(stream))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: cannot read as CSV ({error})") from None
    if not rows:
        raise UserError(f"{path}: no rows")
    columns = {name.strip(): name for name in rows[0] if name is not None}
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(REQUIRED_COLUMNS)})")
    subjects: dict[str, MnmsSubject] = {}
    for line, row in enumerate(rows, start=2):
        value = {c: (row[columns[c]] or "").strip() for c in REQUIRED_COLUMNS}
        code = value["External code"]
        if not code:
            continue
        try:
            ed, es = int(float(value["ED"])), int(float(value["ES"]))
        except ValueError:
            raise UserError(f"{path}: line {line}: ED/ES of {code} are not frame numbers ({value['ED']!r}, {value['ES']!r})") from None
        if not value["Vendor"]:
            raise UserError(f"{path}: line {line}: {code} has no Vendor")
        if code in subjects:
            raise UserError(f"{path}: line {line}: {code} listed twice")
        subjects[code] = MnmsSubject(code, value["Vendor"], value["Centre"], ed, es)
    return subjects


def _subject_cases(folder: Path, subject: MnmsSubject, domain: str | None) -> list[Case]:
    code = folder.name
    image = folder / f"{code}_sa.nii.gz"
    if not image.is_file():
        raise UserError(f"{image}: missing (M&Ms case folders hold <code>_sa.nii.gz)")
    label = folder / f"{code}_sa_gt.nii.gz"
    frames = [("ED", subject.ed)] + ([("ES", subject.es)] if subject.es != subject.ed else [])
    return [
        Case(f"{code}_{phase}", image, label if label.is_file() else None, code, domain or subject.vendor, frame, MNMS_TO_ACDC)
        for phase, frame in frames
    ]


def _case_folders(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def mnms_cases(
    root: Path, csv_path: Path, vendors: list[str] | None = None, manifest: Path | None = None, domain: str | None = None,
    key: str = "data.root",
) -> dict[str, list[Case]]:
    """ED/ES cases of an M&Ms tree by split ("training", "validation", "test"); training cases keep
    their label when the ``_sa_gt`` file exists. ``vendors`` keeps only those vendors' subjects."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{key}: {root} is not a directory")
    subjects = read_mnms_csv(csv_path)
    if vendors is not None:
        known = sorted({s.vendor for s in subjects.values()})
        unknown = [v for v in vendors if v not in known]
        if unknown:
            raise UserError(f"{key.rsplit('.', 1)[0]}.vendors: {', '.join(unknown)} not in {csv_path} (vendors there: {', '.join(known)})")

    if any((root / folder).is_dir() for folder in OFFICIAL_FOLDERS):
        folders = [(split, f) for name, split in OFFICIAL_FOLDERS.items() if (root / name).is_dir() for f in _case_folders(root / name)]
    else:  # flat: <root>/<code>/, held-out codes from the manifest
        held_out: dict[str, str] = {}
        if manifest is not None:
            for name, split in (("val.txt", "validation"), ("test.txt", "test")):
                if (Path(manifest) / name).is_file():
                    held_out.update({code: split for code in read_patient_list(Path(manifest) / name)})
        folders = [(held_out.get(f.name, "training"), f) for f in _case_folders(root)]
        absent = sorted(set(held_out) - {f.name for _, f in folders})
        if absent:
            raise UserError(f"{manifest}: {', '.join(absent[:5])} not found under {root}")
    if not folders:
        raise UserError(f"{key}: no M&Ms case folders under {root}")

    splits: dict[str, list[Case]] = {"training": [], "validation": [], "test": []}
    for split, folder in folders:
        subject = subjects.get(folder.name)
        if subject is None:
            raise UserError(f"{folder}: case {folder.name} is not listed in {csv_path}")
        if vendors is not None and subject.vendor not in vendors:
            continue
        cases = _subject_cases(folder, subject, domain)
        if split != "training" and cases[0].label is None:
            raise UserError(f"{folder}: {split} case without {folder.name}_sa_gt.nii.gz")
        splits[split] += cases
    return splits


def export_mnms_frames(root: Path, csv_path: Path, out_dir: Path, vendors: list[str] | None = None) -> list[Path]:
    """Write every labeled-or-not ED/ES frame of an M&Ms tree as 3D NIfTI files that `predict` and
    `evaluate` read: ``<out>/<code>/<code>_ED.nii.gz`` (+ ``_ED_gt.nii.gz`` in ACDC's label order), and
    ``<out>/domains.csv`` (case, domain, centre, split) for ``evaluate --domains``. Returns the images."""
    import nibabel as nib
    import numpy as np

    from maskmatch_med.data.nifti import load_label, load_volume
    from maskmatch_med.engine.writers import write_text_atomic

    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(root).resolve() or Path(root).resolve() in out_dir.resolve().parents:
        raise UserError(f"--out: {out_dir} lies inside the M&Ms root {root}; choose a folder outside it")
    subjects = read_mnms_csv(csv_path)
    rows, written = ["case,domain,centre,split"], []
    for split, cases in mnms_cases(root, csv_path, vendors).items():
        for case in cases:
            folder = out_dir / case.group
            folder.mkdir(parents=True, exist_ok=True)
            load_volume(case.image, frame=case.frame)  # the same checks (frame range, finite values) as training
            # The frame as stored (dtype, scaling), with a 3D header: the 4D file's spatial affine and voxel size.
            frame = nib.load(str(case.image)).slicer[..., case.frame]
            nib.save(frame, str(folder / f"{case.case_id}.nii.gz"))
            if case.label is not None:
                label = load_label(case.label, frame=case.frame, lut=case.label_lut)
                header = frame.header.copy()
                header.set_data_dtype(np.uint8)
                nib.save(nib.Nifti1Image(label.array.astype(np.uint8), frame.affine, header), str(folder / f"{case.case_id}_gt.nii.gz"))
            rows.append(f"{case.case_id},{case.domain},{subjects[case.group].centre},{split}")
            written.append(folder / f"{case.case_id}.nii.gz")
    write_text_atomic("\n".join(rows) + "\n", out_dir / "domains.csv")
    return written
