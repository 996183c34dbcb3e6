"""The `maskmatch-med` command line: parse, validate, call one function per command.

User mistakes surface as UserError: one line on stderr, exit code 2, no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from maskmatch_med import __version__
from maskmatch_med.errors import TrainingInterrupted, UserError


class _FlagsWithoutType:
    """Nothing beside a flag in --help: typer 0.2x prints `<bool>` next to every flag, --help included,
    as if it took a value; an empty metavar is what its help table shows instead."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_FlagsWithoutType, typer.core.TyperCommand):
    """A command whose usage line names its arguments as every other tool does (`train [OPTIONS] RECIPE`,
    optional ones in brackets) where typer 0.2x writes `{recipe}`."""

    def collect_usage_pieces(self, ctx):
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_usage_name(param) for param in self.get_params(ctx) if param.param_type_name == "argument"]


def _usage_name(argument) -> str:
    """RECIPE, [RECIPE] when optional, NAME=REPORT.csv... when repeated: click's own convention."""
    name = argument.metavar or argument.name.upper()
    name = name if argument.required else f"[{name}]"
    return name + ("..." if argument.nargs != 1 else "")


class _Group(_FlagsWithoutType, typer.core.TyperGroup):
    """The top level, with the same flag display as its commands."""


app = typer.Typer(
    cls=_Group,
    name="maskmatch-med",
    help="MaskMatch semi-supervised segmentation: synth data, train, predict, evaluate, compare.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

SetOption = Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Override a recipe key, e.g. --set train.iterations=500 (repeatable).")]


def _parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UserError(f"--scales: {text!r} is not a comma-separated list of numbers, e.g. 0.75,1.0,1.25") from None
    if not scales or any(s <= 0 for s in scales):
        raise UserError(f"--scales: {text!r} needs at least one scale, all > 0")
    return scales


@app.command(cls=_Command)
def synth(
    dataset: Annotated[str, typer.Argument(metavar="DATASET", help="Layout to generate: acdc.")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Directory to write the dataset into.")],
    patients: Annotated[int, typer.Option(min=1, metavar="N", help="Number of patients.")] = 100,
    seed: Annotated[int, typer.Option(metavar="N", help="Random seed; the same seed gives the same files.")] = 0,
    style: Annotated[
        str,
        typer.Option(
            "--style",
            metavar="A|B|C|D",
            help="Scanner-like acquisition style A|B|C|D (A: ACDC-like, B: 3T 12-bit high-res, C: 8-bit low-contrast "
            "noisy, D: interpolated large-scale). Same seed: same anatomy in every style.",
        ),
    ] = "A",
    first: Annotated[int, typer.Option("--first", metavar="N", help="Number of the first patient (patients of another phantom, other case names).")] = 1,
) -> None:
    """Write a synthetic cardiac MRI phantom in the real ACDC layout."""
    if dataset != "acdc":
        raise UserError(f"synth: unknown dataset {dataset!r} (available: acdc)")
    from maskmatch_med.data.phantom import write_acdc_phantom
    from maskmatch_med.engine.writers import check_output_directory

    check_output_directory(out, "--out")

    written = write_acdc_phantom(out, patients=patients, seed=seed, style=style, first=first)
    suffix = "" if style.strip().upper() == "A" else f" (style {style.strip().upper()})"
    typer.echo(f"wrote {len(written)} patients to {out}{suffix}")


@app.command(cls=_Command)
def train(
    recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe YAML, e.g. recipes/acdc.yaml, or a run directory (with --resume).")],
    set_: SetOption = None,
    output: Annotated[Optional[Path], typer.Option("--output", metavar="DIR", help="Run directory (overrides output_dir).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run directory's last checkpoint.")] = False,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="Progress bar (default: when stderr is a terminal).")] = None,
) -> None:
    """Train a model from a recipe (checks every data file first)."""
    from maskmatch_med.config import load_recipe
    from maskmatch_med.engine.trainer import train as run_training
    from maskmatch_med.scenarios.registry import scenario_for

    overrides = list(set_ or []) + ([f"output_dir={output}"] if output else [])
    if recipe.is_dir():  # a run directory: its saved recipe, and the directory itself as output_dir
        if not (recipe / "recipe.yaml").is_file():
            raise UserError(f"{recipe}: a directory without recipe.yaml is not a run directory")
        recipe, overrides = recipe / "recipe.yaml", [f"output_dir={recipe}", *overrides]
    config = load_recipe(recipe, overrides)
    try:
        result = run_training(config, scenario_for(config), resume=resume, progress=_show_progress(progress))
    except TrainingInterrupted as interruption:  # typer would turn it into a silent exit 130
        typer.echo(str(interruption), err=True)
        raise typer.Exit(130) from None
    if result.is_main:
        typer.echo(
            f"done in {_duration(result)}; best validation {result.score_key} {result.best_score:.4f} at iteration "
            f"{result.best_iteration}; checkpoint {result.best_checkpoint}"
        )


def _show_progress(progress: bool | None) -> bool:
    """--progress/--no-progress, else a bar only when stderr is a terminal: in a log file or a pipe its
    carriage-return redraws are noise (train and predict alike)."""
    return sys.stderr.isatty() if progress is None else progress


def _duration(result) -> str:
    """The final line's time, saying what it counts: a resumed run times only the part it ran."""
    minutes = f"{result.seconds / 60:.1f} min"
    if result.first_iteration == 0:
        return f"{minutes} (the whole run)"
    return f"{minutes} (this part: iterations {result.first_iteration + 1}-{result.iterations}, resumed at {result.first_iteration})"


@app.command("check-data", cls=_Command)
def check_data(
    recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe YAML whose data to check.")],
    set_: SetOption = None,
) -> None:
    """Validate every file a recipe will read; one line per problem."""
    from maskmatch_med.config import load_recipe
    from maskmatch_med.scenarios.registry import scenario_for

    config = load_recipe(recipe, list(set_ or []))
    scenario_for(config).check_data(config, typer.echo)


def _prediction_inputs(inputs: list[Path], datalist: Path | None, section: str) -> list[Path]:
    """`--input` paths followed by the images of the datalist's section: a Decathlon task is predicted
    from its own dataset.json (`test` lists the imagesTs files) without listing the files again."""
    from maskmatch_med.data.datalist import SECTIONS, section_images

    if datalist is None:
        if section != "test":
            raise UserError("--section: applies to --datalist FILE")
        if not inputs:
            raise UserError("predict: give --input FILE_OR_DIR (repeatable) or --datalist FILE")
        return inputs
    if section not in SECTIONS:
        raise UserError(f"--section: {section!r} is not a datalist section ({', '.join(SECTIONS)})")
    return [*inputs, *section_images(datalist, section)]


def _prediction_summary(outputs: list[Path], output: Path) -> str:
    """`wrote N label maps to OUTPUT`, and with --skip-existing how many an earlier run had completed."""
    kept = getattr(outputs, "kept", 0)
    written = len(outputs) - kept
    line = f"wrote {written} label map{'s' if written != 1 else ''} to {output}"
    return line + (f"; kept {kept} that an earlier run had completed (--skip-existing)" if kept else "")


@app.command(cls=_Command)
def predict(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", metavar="FILE", help="A best.pt or last.pt from a run.")],
    output: Annotated[Path, typer.Option("--output", metavar="DIR", help="Directory for the label maps (same file names).")],
    inputs: Annotated[
        Optional[list[Path]], typer.Option("--input", metavar="PATH", help="A NIfTI file or a directory of them (repeatable); JPG/PNG for VOC/Cityscapes checkpoints.")
    ] = None,
    datalist: Annotated[
        Optional[Path], typer.Option("--datalist", metavar="FILE", help="A datalist JSON (e.g. a Decathlon dataset.json): predict the images of its --section.")
    ] = None,
    section: Annotated[str, typer.Option("--section", metavar="NAME", help="With --datalist: test, validation, training or unlabeled.")] = "test",
    scales: Annotated[str, typer.Option(metavar="S,S,...", help="Test-time scales, comma-separated, e.g. 0.75,1.0,1.25.")] = "1.0",
    png: Annotated[bool, typer.Option("--png", help="Also write a PNG montage with the label overlay per case (NIfTI inputs).")] = False,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="cpu, cuda, cuda:N or auto.")] = "auto",
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Keep outputs an interrupted run already completed.")] = False,
    largest_component: Annotated[bool, typer.Option("--largest-component", help="Keep only the largest connected component of each class.")] = False,
    probabilities: Annotated[bool, typer.Option("--probabilities", help="Also write OUTPUT/probabilities/NAME (float32, one channel per class; NIfTI inputs).")] = False,
    uncertainty: Annotated[bool, typer.Option("--uncertainty", help="Also write OUTPUT/uncertainty/NAME, the disagreement across --scales (NIfTI inputs).")] = False,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="Progress bar (default: when stderr is a terminal).")] = None,
) -> None:
    """Segment NIfTI volumes (--input, or a datalist's test images); each output has its input's shape, affine and orientation."""
    from maskmatch_med.scenarios.registry import run_prediction

    written = run_prediction(
        checkpoint, _prediction_inputs(inputs or [], datalist, section), output, _parse_scales(scales), png=png, device=device,
        skip_existing=skip_existing, largest_component=largest_component, probabilities=probabilities, uncertainty=uncertainty,
        progress=_show_progress(progress),
    )
    typer.echo(_prediction_summary(written, output))


@app.command(cls=_Command)
def evaluate(
    pred: Annotated[Path, typer.Option("--pred", metavar="DIR", help="Directory of predicted label maps.")],
    gt: Annotated[Path, typer.Option("--gt", metavar="DIR", help="Directory with the ground truth (searched recursively; NAME_gt.nii.gz matches NAME).")],
    output: Annotated[Optional[Path], typer.Option("--output", metavar="FILE", help="CSV report: per case and class, and means.")] = None,
    class_names: Annotated[Optional[str], typer.Option(metavar="NAME,NAME,...", help="Comma-separated foreground names (default: the predictions' labels.json).")] = None,
    require_all: Annotated[bool, typer.Option("--require-all", help="Fail if a ground-truth case under --gt has no prediction.")] = False,
    domains: Annotated[
        Optional[Path],
        typer.Option("--domains", metavar="PATH", help="Report per domain: a CSV with case,domain columns, or a domain-adaptation recipe / run directory."),
    ] = None,
) -> None:
    """Dice, Jaccard, HD95 and ASD (mm and voxels) per case and class."""
    from maskmatch_med.evaluation.evaluate import evaluate_folders, format_summary_table

    names = [n.strip() for n in class_names.split(",")] if class_names else None
    domain_map = None
    if domains is not None:
        from maskmatch_med.data.domains import load_domain_map

        domain_map = load_domain_map(domains)
    report = evaluate_folders(pred, gt, output_csv=output, class_names=names, require_all=require_all, domains=domain_map)
    typer.echo(f"{len(report.cases)} cases evaluated" + (
        f"; {len(report.unpredicted)} other ground-truth cases under {gt} were not predicted and are not scored"
        " (expected when --gt is a dataset root; --require-all makes it an error)" if report.unpredicted else ""
    ))
    typer.echo(format_summary_table(report))
    if report.by_domain:
        from maskmatch_med.evaluation.evaluate import format_domain_table

        typer.echo("\n" + format_domain_table(report))
    if output:
        typer.echo(f"report written to {output}")


@app.command(cls=_Command)
def compare(
    reports: Annotated[
        list[str],
        typer.Argument(
            help="Two or more NAME=REPORT.csv, reports written by evaluate --output; differences are the first minus each other.",
            metavar="NAME=REPORT.csv",
            show_default=False,
        ),
    ],
    output: Annotated[Optional[Path], typer.Option("--output", metavar="FILE", help="Also write the comparison as CSV.")] = None,
) -> None:
    """Evaluate reports side by side: Dice per class, mean Dice, HD95 and ASD, and the first minus the others."""
    from maskmatch_med.evaluation.compare import format_comparison_table, load_reports, write_comparison_csv

    loaded = load_reports(reports)
    if output:
        write_comparison_csv(loaded, output)
    typer.echo(format_comparison_table(loaded))
    if output:
        typer.echo(f"comparison written to {output}")


@app.command("export-frames", cls=_Command)
def export_frames(
    root: Annotated[Path, typer.Option("--root", metavar="DIR", help="M&Ms root (Training/, Validation/, Testing/ or <code>/ folders).")],
    csv_path: Annotated[Path, typer.Option("--csv", metavar="FILE", help="The M&Ms information CSV (External code, Vendor, Centre, ED, ES).")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Folder for the 3D frames and domains.csv.")],
    vendors: Annotated[Optional[str], typer.Option(metavar="V,V,...", help="Comma-separated vendors to keep, e.g. C,D (default: all).")] = None,
) -> None:
    """Write the ED and ES frames of M&Ms 4D scans as 3D NIfTI files (labels in ACDC's order) for predict and evaluate."""
    from maskmatch_med.data.mnms import export_mnms_frames

    keep = [v.strip() for v in vendors.split(",") if v.strip()] if vendors else None
    written = export_mnms_frames(root, csv_path, out, keep)
    typer.echo(f"wrote {len(written)} frames to {out}; case domains in {out / 'domains.csv'}")


@app.command(cls=_Command)
def manifest(
    dataset: Annotated[str, typer.Argument(metavar="DATASET", help="voc or cityscapes.")],
    root: Annotated[Path, typer.Option("--root", metavar="DIR", help="Dataset root (VOC2012 folder, or the Cityscapes folder with leftImg8bit/ and gtFine/).")],
    labeled: Annotated[str, typer.Option("--labeled", metavar="COUNT", help="Labeled images: a count (92) or a fraction (1/16, 0.0625).")],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Directory for labeled.txt, unlabeled.txt, val.txt.")],
    seed: Annotated[int, typer.Option(metavar="N", help="Random seed; the same seed and tree give the same split.")] = 0,
) -> None:
    """Write UniMatch-format split files (labeled.txt, unlabeled.txt, val.txt) for VOC or Cityscapes."""
    from maskmatch_med.data.natural import make_manifest

    counts = make_manifest(dataset, root, labeled, seed, out)
    typer.echo(f"wrote {out}: {counts['labeled']} labeled, {counts['unlabeled']} unlabeled, {counts['validation']} validation images")


@app.command(cls=_Command)
def version() -> None:
    """Print the package version."""
    typer.echo(__version__)


def main() -> None:
    try:
        app()
    except UserError as error:
        for line in str(error).splitlines():  # several data problems: one line each
            typer.echo(f"error: {line}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
