"""Evaluate a folder of predicted label maps against ground truth (the logic behind ``maskmatch-med evaluate``).

Matching: every ``*.nii.gz`` / ``*.nii`` file directly in ``pred_dir`` is a prediction ``NAME``; its
ground truth is ``NAME_gt.nii.gz`` (preferred) or ``NAME.nii.gz`` (``.nii`` accepted too) anywhere under
``gt_dir``, so ``gt_dir`` may be an ACDC root (``root/patient001/patient001_frame01_gt.nii.gz``). Files of
``gt_dir`` that are ground truth (those named ``*_gt`` when any is, otherwise all NIfTI files) and have
no prediction are an error: a missing prediction must not silently raise the mean.

Geometry: a prediction must have its ground truth's shape and affine (within 1e-3). Distances in mm use
the ground truth's voxel size (``header.get_zooms()``). Trailing singleton axes beyond the second are
dropped, so a ``(H, W, 1)`` NIfTI is evaluated as a 2D image.

Metrics and their empty-class convention: :mod:`maskmatch_med.evaluation.metrics`. The summary averages each
metric over the cases where it is defined (``nanmean``) and reports that count ``n``; the ``mean`` row is
the mean over foreground classes of the class means (the usual paper convention), with the standard
deviation over cases of each case's class-average.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskmatch_med.data.nifti import NIFTI_SUFFIXES, integer_labels, is_nifti, nifti_stem, open_nifti, read_data
from maskmatch_med.engine.writers import write_text_atomic
from maskmatch_med.errors import UserError
from maskmatch_med.evaluation.metrics import CLASS_METRICS, case_metrics, quiet_monai_internal_warnings

__all__ = [
    "CSV_COLUMNS",
    "MEAN_ROW",
    "EvaluationReport",
    "evaluate_folders",
    "format_domain_table",
    "format_summary_table",
    "write_report_csv",
]

CSV_COLUMNS = ("case", "class", *CLASS_METRICS)
MEAN_ROW = "mean"  # name of the class-average row in the summary and the CSV
AFFINE_TOL = 1e-3


@dataclass
class EvaluationReport:
    """Result of :func:`evaluate_folders`.

    per_case: one dict per case and foreground class, keys ``case``, ``class`` (its name), ``label`` (its
        integer value) and the metrics of ``CLASS_METRICS`` (float, NaN where undefined).
    summary: ``{class_name or "mean": {metric: {"mean": float | None, "std": float | None, "n": int}}}``;
        None (never NaN) where no case contributes.
    class_names: foreground class names, label 1 first.
    """

    per_case: list[dict[str, Any]]
    summary: dict[str, dict[str, dict[str, Any]]]
    class_names: list[str]
    num_classes: int
    cases: list[str] = field(default_factory=list)
    output_csv: Path | None = None
    unpredicted: list[str] = field(default_factory=list)  # ground-truth cases without a prediction
    domains: dict[str, str] = field(default_factory=dict)  # case -> domain, when evaluated per domain
    by_domain: dict[str, dict[str, dict[str, dict[str, Any]]]] = field(default_factory=dict)  # domain -> summary

    def mean(self, metric: str = "dice", cls: str = MEAN_ROW) -> float | None:
        """The summary mean of ``metric`` for class ``cls`` (default: the class average), None if undefined."""
        return self.summary[cls][metric]["mean"]


# ----------------------------------------------------------------------------------------------- files


def _case_name(path: Path) -> str | None:
    """The case a NIfTI file holds (its name without .nii / .nii.gz); None for other files."""
    return nifti_stem(path) if is_nifti(path) and path.name.lower() not in NIFTI_SUFFIXES else None


def _list_predictions(pred_dir: Path) -> dict[str, Path]:
    preds: dict[str, Path] = {}
    for path in sorted(pred_dir.iterdir()):
        stem = _case_name(path)
        if stem is None or not path.is_file():
            continue
        if stem in preds:
            raise UserError(f"{pred_dir}: both {preds[stem].name} and {path.name} are predictions for case {stem}")
        preds[stem] = path
    if not preds:
        raise UserError(f"{pred_dir}: no prediction files (*.nii.gz or *.nii) in this folder")
    return preds


def _index_ground_truth(gt_dir: Path, exclude_dir: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """NIfTI files under gt_dir by stem: (files named STEM_gt keyed by STEM, other files keyed by STEM)."""
    gt_named: dict[str, list[Path]] = {}
    plain: dict[str, list[Path]] = {}
    for root, dirs, files in os.walk(gt_dir):
        if Path(root).resolve() == exclude_dir:
            dirs[:] = []  # predictions (and anything below them) living inside gt_dir are not ground truth
            continue
        dirs.sort()
        for fname in sorted(files):
            path = Path(root) / fname
            stem = _case_name(path)
            if stem is None:
                continue
            if stem.endswith("_gt") and len(stem) > 3:
                gt_named.setdefault(stem[:-3], []).append(path)
            else:
                plain.setdefault(stem, []).append(path)
    return gt_named, plain


def _match(preds: dict[str, Path], gt_dir: Path, pred_dir: Path, require_all: bool) -> tuple[dict[str, Path], list[str]]:
    """Ground truth per prediction, and the ground-truth cases nobody predicted (an error with
    `require_all`; otherwise reported, since a dataset root usually holds more cases than a test set)."""
    gt_named, plain = _index_ground_truth(gt_dir, pred_dir.resolve())
    matched: dict[str, Path] = {}
    unmatched: list[str] = []
    for case in preds:
        candidates = gt_named.get(case) or plain.get(case) or []
        if len(candidates) > 1:
            listed = ", ".join(str(p.relative_to(gt_dir)) for p in candidates)
            raise UserError(f"{gt_dir}: ambiguous ground truth for prediction {preds[case].name}: {listed}")
        if not candidates:
            unmatched.append(preds[case].name)
        else:
            matched[case] = candidates[0]
    if unmatched:
        raise UserError(
            f"{gt_dir}: no ground truth (NAME_gt.nii.gz or NAME.nii.gz) for {len(unmatched)} prediction(s): "
            + _short_list(unmatched)
        )
    # Ground truth without a prediction: the *_gt files if there are any, else every NIfTI file.
    gt_files = gt_named if gt_named else plain
    missing = sorted(name for name in gt_files if name not in preds)
    if missing and require_all:
        raise UserError(
            f"{pred_dir}: {len(missing)} ground-truth case(s) under {gt_dir} have no prediction "
            f"(a missing case would bias the mean): " + _short_list(missing)
        )
    return matched, missing


def _short_list(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _read_class_names(pred_dir: Path) -> list[str] | None:
    """Foreground names from ``pred_dir/labels.json`` (``{"0": "background", "1": "RV", ...}``), if any."""
    path = pred_dir / "labels.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read as JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: expected an object mapping label values to names, like {{\"0\": \"background\", \"1\": \"RV\"}}")
    try:
        labels = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        raise UserError(f"{path}: keys must be integer label values, got {sorted(raw)}") from None
    if sorted(labels) != list(range(len(labels))) or len(labels) < 2:
        raise UserError(f"{path}: label values must be 0..N-1 with N >= 2, got {sorted(labels)}")
    return [labels[i] for i in range(1, len(labels))]


@dataclass(frozen=True)
class _Classes:
    """The classes an evaluation scores when something fixes them before any file is read, and what
    fixed them: a label outside them is refused naming that source first (the option or file to
    correct), not only the label map that showed the mismatch."""

    names: list[str] | None
    count: int | None  # including background; None: the ground truth's labels decide
    source: str = ""  # "--class-names", PRED/labels.json or "num_classes=N"
    fix: str = ""

    def refusal(self, path: Path, label: int) -> UserError:
        if self.names is None:
            return UserError(f"{self.source}: labels 0..{self.count - 1}, but {path} holds label {label} (out of range)")
        named = "label 1" if self.count == 2 else f"labels 1..{self.count - 1}"
        return UserError(
            f"{self.source}: {len(self.names)} foreground name{'s' if len(self.names) != 1 else ''} for {named}, "
            f"but {path} holds label {label}; {self.fix}"
        )


def _known_classes(pred_dir: Path, class_names: list[str] | None, num_classes: int | None) -> _Classes:
    """The names (label 1 first) and count given as `class_names` (named ``--class-names`` in messages,
    the option they come from), else read from ``pred_dir/labels.json``, else only `num_classes`, else
    nothing: then the ground truth's labels set the range."""
    if num_classes is not None and int(num_classes) < 2:
        raise UserError(f"num_classes: must be at least 2 (background + one class), got {num_classes}")
    if class_names is None:
        class_names = _read_class_names(pred_dir)
        source, fix = f"{pred_dir / 'labels.json'}", "correct labels.json, or name every class with --class-names"
    else:
        class_names = [str(n) for n in class_names]
        source, fix = "--class-names", "give one name per foreground label, comma-separated"
    if class_names is None:
        count = None if num_classes is None else int(num_classes)
        return _Classes(None, count, f"num_classes={num_classes}" if count else "")
    if not class_names:
        raise UserError(f"{source}: no foreground class names")
    if len(set(class_names)) != len(class_names) or MEAN_ROW in class_names:
        raise UserError(f"{source}: class names must be unique and not '{MEAN_ROW}', got {class_names}")
    if num_classes is not None and len(class_names) != int(num_classes) - 1:
        raise UserError(
            f"{source}: {len(class_names)} foreground class names but num_classes={num_classes} "
            f"(which includes background) needs {int(num_classes) - 1}"
        )
    return _Classes(class_names, len(class_names) + 1, source, fix)


def _refuse_labels_beyond_ground_truth(tops: list[tuple[int, int]], cases: list[str], preds: dict[str, Path]) -> int:
    """The class count when nothing names the classes: background up to the largest ground-truth label
    (at least one foreground class). A prediction holding a label above it is refused: no ground truth
    has that class, so scoring it would only add a Dice-0 class to the mean (a model of another dataset,
    or the wrong folder), and a careful user would rather be told than average it in."""
    count = max(max(gt_top for _, gt_top in tops) + 1, 2)
    for case, (pred_top, _) in zip(cases, tops):
        if pred_top >= count:
            raise UserError(
                f"{preds[case]}: label {pred_top} is in no ground-truth file (their labels are 0..{count - 1}); "
                "if it is a class, name every class with --class-names (or a labels.json beside the predictions)"
            )
    return count


# ----------------------------------------------------------------------------------------------- images


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(integer label array, affine, spacing) of a 2D or 3D NIfTI label map, checked as training's
    label maps are (`integer_labels`)."""
    img = open_nifti(path)
    data = read_data(path, img, np.int64)
    zooms = tuple(float(z) for z in img.header.get_zooms())
    while data.ndim > 2 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise UserError(f"{path}: expected a 2D or 3D label map, got shape {tuple(img.shape)}")
    data = integer_labels(path, data).astype(np.int64, copy=False)
    return data, np.asarray(img.affine, dtype=np.float64), zooms[: data.ndim]


def _load_pair(pred_path: Path, gt_path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    pred, pred_affine, _ = _load(pred_path)
    gt, gt_affine, spacing = _load(gt_path)
    if pred.shape != gt.shape:
        raise UserError(
            f"{pred_path}: shape {pred.shape} differs from its ground truth {gt_path} {gt.shape}; "
            "predictions must be on the ground truth's grid"
        )
    if not np.allclose(pred_affine, gt_affine, rtol=0.0, atol=AFFINE_TOL):
        diff = float(np.max(np.abs(pred_affine - gt_affine)))
        raise UserError(
            f"{pred_path}: affine differs from its ground truth {gt_path} (max difference {diff:.4g} > {AFFINE_TOL}); "
            "predictions must be on the ground truth's grid"
        )
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise UserError(f"{gt_path}: voxel size {spacing} in the header is not positive")
    return pred, gt, spacing


# ----------------------------------------------------------------------------------------------- summary


def _stats(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": int(arr.size)}


def _summarise(per_case: list[dict[str, Any]], class_names: list[str], cases: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for name in class_names:
        rows = [r for r in per_case if r["class"] == name]
        summary[name] = {m: _stats([r[m] for r in rows]) for m in CLASS_METRICS}
    by_case: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
    for r in per_case:
        by_case[r["case"]].append(r)
    mean_row: dict[str, dict[str, Any]] = {}
    for m in CLASS_METRICS:
        class_means = [summary[n][m]["mean"] for n in class_names if summary[n][m]["mean"] is not None]
        case_means = []
        for rows in by_case.values():
            vals = [r[m] for r in rows if not math.isnan(r[m])]
            if vals:
                case_means.append(float(np.mean(vals)))
        spread = _stats(case_means)
        mean_row[m] = {
            "mean": float(np.mean(class_means)) if class_means else None,
            "std": spread["std"],
            "n": spread["n"],
        }
    summary[MEAN_ROW] = mean_row
    return summary


# ----------------------------------------------------------------------------------------------- outputs


def _csv_value(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return format(float(v), ".6g")


def write_report_csv(report: EvaluationReport, output_csv: Path) -> Path:
    """Write the per-case rows plus ``MEAN`` rows (per class and ``mean``) to ``output_csv`` atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if report.domains:
        _write_domain_rows(report, writer)
        return _write_csv_text(buf.getvalue(), output_csv)
    writer.writerow(CSV_COLUMNS)
    for r in report.per_case:
        writer.writerow([r["case"], r["class"], *(_csv_value(r[m]) for m in CLASS_METRICS)])
    for name in [*report.class_names, MEAN_ROW]:
        writer.writerow(["MEAN", name, *(_csv_value(report.summary[name][m]["mean"]) for m in CLASS_METRICS)])
    return _write_csv_text(buf.getvalue(), output_csv)


def _write_domain_rows(report: EvaluationReport, writer) -> None:
    """The per-domain CSV: a `domain` column after `case`; MEAN rows for all cases ("all"), then per domain."""
    writer.writerow(("case", "domain", *CSV_COLUMNS[1:]))
    for r in report.per_case:
        writer.writerow([r["case"], report.domains[r["case"]], r["class"], *(_csv_value(r[m]) for m in CLASS_METRICS)])
    for domain, summary in [("all", report.summary), *report.by_domain.items()]:
        for name in [*report.class_names, MEAN_ROW]:
            writer.writerow(["MEAN", domain, name, *(_csv_value(summary[name][m]["mean"]) for m in CLASS_METRICS)])


def _write_csv_text(text: str, output_csv: Path) -> Path:
    output_csv = Path(output_csv)
    try:
        write_text_atomic(text, output_csv)
    except OSError as exc:
        raise UserError(f"{output_csv}: cannot write here ({exc.strerror or exc})") from None
    return output_csv


def _fmt(stats: dict[str, Any], digits: int) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.{digits}f} +/- {stats['std']:.{digits}f}"


def format_domain_table(report: EvaluationReport) -> str:
    """One row per domain (then all cases): case count, Dice per class and mean, HD95 and ASD in mm."""
    headers = ["domain", "cases", *(f"Dice {n}" for n in report.class_names), "Dice mean", "HD95 (mm)", "ASD (mm)"]
    counts = {d: sum(1 for c in report.cases if report.domains[c] == d) for d in report.by_domain}
    rows = []
    for domain, summary in [*report.by_domain.items(), ("all", report.summary)]:
        dice = [summary[n]["dice"] for n in [*report.class_names, MEAN_ROW]]
        rows.append([
            domain, str(counts.get(domain, len(report.cases))), *(_fmt(d, 4) for d in dice),
            _fmt(summary[MEAN_ROW]["hd95_mm"], 2), _fmt(summary[MEAN_ROW]["asd_mm"], 2),
        ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows[:-1])]
    out += [line(["-" * w for w in widths]), line(rows[-1]), "per domain: mean +/- std over that domain's cases"]
    return "\n".join(out)


def format_summary_table(report: EvaluationReport) -> str:
    """The summary as a fixed-width text table: mean +/- std over cases, with the contributing counts."""
    headers = ["class", "n", "Dice", "Jaccard", "n_dist", "HD95 (mm)", "ASD (mm)", "HD95 (vox)", "ASD (vox)"]
    rows = []
    for name in [*report.class_names, MEAN_ROW]:
        s = report.summary[name]
        rows.append([
            name,
            str(s["dice"]["n"]),
            _fmt(s["dice"], 4),
            _fmt(s["jaccard"], 4),
            str(s["hd95_mm"]["n"]),
            _fmt(s["hd95_mm"], 2),
            _fmt(s["asd_mm"], 2),
            _fmt(s["hd95_vox"], 2),
            _fmt(s["asd_vox"], 2),
        ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows[:-1]]
    out.append(line(["-" * w for w in widths]))
    out.append(line(rows[-1]))
    out.append(
        f"{len(report.cases)} case(s); mean +/- std over cases where defined (n: Dice, n_dist: distances). "
        "HD95 = 95% Hausdorff distance, ASD = average symmetric surface distance; "
        "mm from the ground-truth voxel size, vox in voxel units."
    )
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- main


def evaluate_folders(
    pred_dir: Path,
    gt_dir: Path,
    output_csv: Path | None = None,
    class_names: list[str] | None = None,
    num_classes: int | None = None,
    require_all: bool = False,
    domains: dict[str, str] | None = None,
) -> EvaluationReport:
    """Evaluate every prediction in ``pred_dir`` against its ground truth under ``gt_dir``.

    Args:
        pred_dir: folder of predicted label maps (``*.nii.gz`` / ``*.nii``), e.g. the predict command's output.
        gt_dir: folder searched recursively for ``NAME_gt.nii.gz`` or ``NAME.nii.gz`` (an ACDC root works).
        output_csv: if given, the per-case CSV report is written there (atomically).
        class_names: foreground class names (label 1 first; messages call them ``--class-names``);
            default: ``pred_dir/labels.json`` when it exists, else ``class1``, ``class2``, ...
        num_classes: number of classes including background; default: from the class names, else the
            largest ground-truth label plus one (at least 2). A label outside the classes, in a
            prediction or a ground truth, is refused naming where the classes came from; without names,
            a prediction holding a label no ground truth has is refused naming the prediction.
        require_all: every ground-truth case under ``gt_dir`` must have a prediction; otherwise the
            cases without one are only listed in ``report.unpredicted``.
        domains: case -> domain (site, vendor); every prediction needs one. The report then also
            summarises each domain (``report.by_domain``) and the CSV gains a ``domain`` column.

    Raises:
        UserError: missing or ambiguous files, mismatched geometry, bad labels, unwritable output.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not pred_dir.is_dir():
        raise UserError(f"{pred_dir}: prediction folder does not exist or is not a folder")
    if not gt_dir.is_dir():
        raise UserError(f"{gt_dir}: ground-truth folder does not exist or is not a folder")
    if pred_dir.resolve() == gt_dir.resolve():
        raise UserError(f"{gt_dir}: the ground-truth folder must differ from the prediction folder")

    preds = _list_predictions(pred_dir)
    if domains is not None:
        without = [case for case in preds if case not in domains]
        if without:
            raise UserError(f"--domains: no domain for {len(without)} prediction(s): " + _short_list(without))
    gts, unpredicted = _match(preds, gt_dir, pred_dir, require_all)

    if output_csv is not None:
        output_csv = Path(output_csv)
        if output_csv.is_dir():
            raise UserError(f"{output_csv}: is a folder; give a file name for the CSV report")
        target = output_csv.resolve()
        inputs = {p.resolve() for p in [*preds.values(), *gts.values(), pred_dir / "labels.json"]}
        if target in inputs:
            raise UserError(f"{output_csv}: would overwrite an input file; choose another output path")

    known = _known_classes(pred_dir, class_names, num_classes)
    cases = list(preds)
    fixed_classes = known.count

    def score(case: str) -> tuple[tuple[int, int], dict[int, dict[str, float]]]:
        """((largest predicted label, largest ground-truth label), metrics) of one case; loads, checks
        and scores, then frees the arrays."""
        p, g, spacing = _load_pair(preds[case], gts[case])
        p_top, g_top = int(p.max()), int(g.max())
        top = max(p_top, g_top)
        if fixed_classes is not None and top >= fixed_classes:
            raise known.refusal(preds[case] if p_top == top else gts[case], top)
        # With num_classes unknown, score the labels this case has: any class above them is absent from
        # both arrays, hence all-NaN, which is filled in below once the global count is known.
        n = fixed_classes if fixed_classes is not None else max(top + 1, 2)
        return (p_top, g_top), case_metrics(p, g, n, spacing, distances=True)

    # Streaming over cases with two workers: the distance computations (KD-tree queries, erosions, torch
    # ops) and the gzip decoding release the GIL; only two cases are in memory at a time.
    workers = min(2, os.cpu_count() or 1, len(cases))
    results: list[tuple[tuple[int, int], dict[int, dict[str, float]]]] = []
    with quiet_monai_internal_warnings():  # entered here, on the main thread, for the workers' sake
        if workers > 1:
            pool = ThreadPoolExecutor(max_workers=workers)
            try:
                results = list(pool.map(score, cases))
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            results = [score(c) for c in cases]

    if fixed_classes is None:
        num_classes = _refuse_labels_beyond_ground_truth([tops for tops, _ in results], cases, preds)
    else:
        num_classes = fixed_classes
    class_names = known.names or [f"class{i}" for i in range(1, num_classes)]
    nan = float("nan")
    scores = [{c: r.get(c, {m: nan for m in CLASS_METRICS}) for c in range(1, num_classes)} for _, r in results]

    per_case: list[dict[str, Any]] = []
    for case, result in zip(cases, scores):
        for label in range(1, num_classes):
            per_case.append({"case": case, "class": class_names[label - 1], "label": label, **result[label]})

    report = EvaluationReport(
        per_case=per_case,
        summary=_summarise(per_case, class_names, cases),
        class_names=list(class_names),
        num_classes=num_classes,
        cases=cases,
        unpredicted=unpredicted,
    )
    if domains is not None:
        report.domains = {case: domains[case] for case in cases}
        for domain in sorted(set(report.domains.values())):
            members = [c for c in cases if report.domains[c] == domain]
            rows = [r for r in per_case if report.domains[r["case"]] == domain]
            report.by_domain[domain] = _summarise(rows, class_names, members)
    if output_csv is not None:
        report.output_csv = write_report_csv(report, output_csv)
    return report
