"""Put ``evaluate`` reports side by side (the logic behind ``maskmatch-med compare``).

A semi-supervised score says little alone: what the unlabeled scans bought is its difference from the
supervised baseline trained on the same labeled data, recipe and budget. This module reads two or more
CSV reports written by ``evaluate --output`` and shows, per class, each report's mean Dice, then the
class-average Dice, HD95 and ASD (mm), and the first report minus each of the others.

It reads only the report's ``MEAN`` rows, the numbers ``evaluate`` printed, rather than
recomputing them from the per-case rows (read for their case names only), so no second averaging
convention exists. Reports are compared only if they score the same foreground classes on the same
cases: a mean over other test cases is not a baseline. A per-domain report (``evaluate --domains``)
contributes its all-cases (``all``) rows.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from maskmatch_med.engine.writers import write_text_atomic
from maskmatch_med.errors import UserError
from maskmatch_med.evaluation.evaluate import CSV_COLUMNS, MEAN_ROW

__all__ = ["ComparisonRow", "ReportMeans", "comparison_rows", "format_comparison_table", "load_reports", "write_comparison_csv"]

_DOMAIN_COLUMNS = ("case", "domain", *CSV_COLUMNS[1:])  # the header evaluate writes with --domains
_ALL_DOMAINS = "all"  # the domain name of a per-domain report's all-cases MEAN rows

# The class-average rows after the per-class Dice rows: (metric column, label in the table, digits).
_AVERAGE_ROWS = (("dice", "Dice mean", 4), ("hd95_mm", "HD95 mean (mm)", 2), ("asd_mm", "ASD mean (mm)", 2))
_DICE_DIGITS = 4


@dataclass(frozen=True)
class ReportMeans:
    """The ``MEAN`` rows of one evaluate report, under the name the user gave it.

    means: ``{class name or "mean": {metric: value or None}}``; None where evaluate left the cell empty
        (no case defined the metric).
    """

    name: str
    path: Path
    class_names: tuple[str, ...]
    cases: frozenset[str]
    means: dict[str, dict[str, float | None]]


@dataclass(frozen=True)
class ComparisonRow:
    """One row of the comparison: a metric of a class (or the class average, ``cls == "mean"``).

    values: one per report, in the order given; differences: the first report's value minus each later
    report's, None where either is undefined.
    """

    metric: str
    cls: str
    label: str
    digits: int
    values: list[float | None]
    differences: list[float | None]


def _parse_argument(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise UserError(f"{text!r}: expected NAME=REPORT.csv, e.g. maskmatch=runs/demo/test_report.csv")
    return name, Path(path)


def _number(path: Path, line: int, column: str, cell: str) -> float | None:
    if cell.strip() == "":
        return None
    try:
        value = float(cell)
    except ValueError:
        raise UserError(f"{path}: line {line}: {column} {cell!r} is not a number") from None
    return None if math.isnan(value) else value


def _read_report(name: str, path: Path) -> ReportMeans:
    """One report's MEAN rows and case names; UserError naming the file if it is not an evaluate report."""
    if not path.exists():
        raise UserError(f"{path}: report not found (argument {name}={path})")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give the CSV file that evaluate --output wrote")
    not_a_report = (
        f"{path}: not an evaluate report (expected the header {','.join(CSV_COLUMNS)}, "
        "as written by maskmatch-med evaluate --output)"
    )
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (UnicodeDecodeError, csv.Error):
        raise UserError(not_a_report) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not rows or tuple(rows[0]) not in (CSV_COLUMNS, _DOMAIN_COLUMNS):
        raise UserError(not_a_report)
    header = rows[0]
    per_domain = header[1] == "domain"
    metrics = CSV_COLUMNS[2:]  # the metric columns, last in both layouts
    class_names: list[str] = []
    cases: set[str] = set()
    means: dict[str, dict[str, float | None]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UserError(f"{path}: line {line} has {len(row)} fields, the header {len(header)}")
        if row[0] != "MEAN":
            cases.add(row[0])
            continue
        if per_domain and row[1] != _ALL_DOMAINS:
            continue  # one domain's means; the comparison is over all cases
        cls = row[2] if per_domain else row[1]
        if cls in means:
            raise UserError(f"{path}: line {line}: a second MEAN row for class {cls!r}")
        means[cls] = {m: _number(path, line, m, cell) for m, cell in zip(metrics, row[-len(metrics) :])}
        if cls != MEAN_ROW:
            class_names.append(cls)
    if MEAN_ROW not in means or not class_names:
        raise UserError(f"{path}: no MEAN rows per class and '{MEAN_ROW}'; is it a complete evaluate report?")
    return ReportMeans(name, path, tuple(class_names), frozenset(cases), means)


def _short_list(names: Sequence[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def load_reports(arguments: Sequence[str]) -> list[ReportMeans]:
    """Read ``NAME=PATH`` arguments into reports, in order; the first is the reference of the differences.

    Raises:
        UserError: fewer than two reports, a malformed or repeated NAME, a missing or unreadable file,
            a CSV that is not an evaluate report, or reports of other classes or other cases than the first.
    """
    parsed = [_parse_argument(text) for text in arguments]
    if len(parsed) < 2:
        raise UserError("compare: needs at least two reports, e.g. maskmatch=A.csv supervised=B.csv")
    names = [name for name, _ in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"compare: report name {repeated[0]!r} is given twice; every NAME must differ")
    reports = [_read_report(name, path) for name, path in parsed]
    first = reports[0]
    for report in reports[1:]:
        if report.class_names != first.class_names:
            raise UserError(
                f"{report.path}: classes {', '.join(report.class_names)} differ from {first.path}'s "
                f"{', '.join(first.class_names)}; compare reports of the same labels"
            )
        if report.cases != first.cases:
            only = sorted(report.cases ^ first.cases)
            raise UserError(
                f"{report.path}: scores other cases than {first.path} ({len(only)} in only one of them: "
                f"{_short_list(only)}); compare reports on the same test cases"
            )
    return reports


def _difference_label(first: ReportMeans, other: ReportMeans) -> str:
    return f"{first.name} - {other.name}"


def comparison_rows(reports: Sequence[ReportMeans]) -> list[ComparisonRow]:
    """Dice per class, then the class averages of Dice, HD95 and ASD (mm), for reports from :func:`load_reports`."""
    first = reports[0]
    wanted = [("dice", cls, f"Dice {cls}", _DICE_DIGITS) for cls in first.class_names]
    wanted += [(metric, MEAN_ROW, label, digits) for metric, label, digits in _AVERAGE_ROWS]
    rows = []
    for metric, cls, label, digits in wanted:
        values = [r.means[cls][metric] for r in reports]
        diffs = [None if values[0] is None or v is None else values[0] - v for v in values[1:]]
        rows.append(ComparisonRow(metric, cls, label, digits, values, diffs))
    return rows


def format_comparison_table(reports: Sequence[ReportMeans]) -> str:
    """The comparison as a fixed-width text table, class averages below a rule, and a line on reading it."""
    first = reports[0]
    headers = ["", *(r.name for r in reports), *(_difference_label(first, r) for r in reports[1:])]
    body = []
    for row in comparison_rows(reports):
        cells = ["n/a" if v is None else f"{v:.{row.digits}f}" for v in row.values]
        cells += ["n/a" if d is None else f"{d:+.{row.digits}f}" for d in row.differences]
        body.append([row.label, *cells])
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = line(["-" * w for w in widths])
    per_class = len(first.class_names)
    out = [line(headers), rule, *(line(r) for r in body[:per_class]), rule, *(line(r) for r in body[per_class:])]
    n = len(first.cases)
    out.append(
        f"{n} case{'s' if n != 1 else ''} in every report; means over cases as evaluate reports them. "
        "Dice: higher is better; HD95, ASD: lower is better."
    )
    return "\n".join(out)


def write_comparison_csv(reports: Sequence[ReportMeans], output_csv: Path) -> Path:
    """Write the comparison rows (metric, class, each report, each difference) to ``output_csv`` atomically."""
    output_csv = Path(output_csv)
    if output_csv.is_dir():
        raise UserError(f"{output_csv}: is a folder; give a file name for the comparison CSV")
    if any(output_csv.resolve() == r.path.resolve() for r in reports):
        raise UserError(f"{output_csv}: would overwrite an input report; choose another output path")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["metric", "class", *(r.name for r in reports), *(_difference_label(reports[0], r) for r in reports[1:])])
    for row in comparison_rows(reports):
        cells = [*row.values, *row.differences]
        writer.writerow([row.metric, row.cls, *("" if v is None else format(v, ".6g") for v in cells)])
    try:
        return write_text_atomic(buf.getvalue(), output_csv)
    except OSError as exc:
        raise UserError(f"{output_csv}: cannot write here ({exc.strerror or exc})") from None
