"""How good are a teacher's pseudo-labels under each ensembling and threshold rule? (no training)

Loads a run's checkpoint (its EMA teacher, or the saved inference network), predicts every unlabeled
training slice of the run's recipe without augmentation, and scores the pseudo-labels each rule keeps
against the label files those cases have on disk (the phantom writes them): per class precision (of
the confident pixels called c, the share that are c), recall (of the pixels of c, the share
confidently called c) and "as background" (of the pixels of c, the share confidently called background:
the pseudo-labels that teach the student to miss c), and the share of all pixels that are confident. Ground truth is only read
here, to compare rules; nothing is trained.

    .venv/bin/python benchmarks/pseudo_labels.py runs/demo/checkpoints/best.pt
    .venv/bin/python benchmarks/pseudo_labels.py RUN/checkpoints/last.pt --set data.root=... --name demo_last

Writes results/pseudo_labels_<name>.md and .json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import save

from maskmatch_med.config import load_recipe
from maskmatch_med.data.checks import check_splits
from maskmatch_med.data.splits import resolve_splits
from maskmatch_med.engine.checkpoint import load_checkpoint
from maskmatch_med.engine.trainer import all_class_names
from maskmatch_med.method.ensemble import fuse_probabilities, scale_probabilities
from maskmatch_med.method.pseudo_labels import (
    ClasswiseThreshold, agree_labels, confident, foreground_islands, pseudo_label_stats, vote_valid,
)
from maskmatch_med.models import build_model, size_divisor
from maskmatch_med.scenarios.slices.data import audit_labels, build_slice_set

RULES = [
    ("scale 1.0, threshold", [1.0], "mean"),
    ("scales 0.75-1.25, mean", [0.75, 1.0, 1.25], "mean"),
    ("scales 0.75-1.25, max", [0.75, 1.0, 1.25], "max"),
    ("scales 0.75-1.25, vote (majority)", [0.75, 1.0, 1.25], "vote"),
    ("scales 0.75-1.25, vote (any scale)", [0.75, 1.0, 1.25], "vote_any"),
    ("scales 0.75-1.25, agree (any scale, no contradiction)", [0.75, 1.0, 1.25], "agree"),
    ("scales 0.75-1.25, vote (any scale; background: every scale)", [0.75, 1.0, 1.25], "vote_any_bg_all"),
    ("scales 0.9-1.1, vote (majority)", [0.9, 1.0, 1.1], "vote"),
    # Upsampling only: a coarser view cannot lose a thin structure (the RV) and make it confident background.
    ("scales 1.0-1.5, mean", [1.0, 1.25, 1.5], "mean"),
    ("scales 1.0-1.5, vote (any scale)", [1.0, 1.25, 1.5], "vote_any"),
    ("scales 1.0-1.5, vote (any scale; background: every scale)", [1.0, 1.25, 1.5], "vote_any_bg_all"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override, as for train")
    parser.add_argument("--name", default=None, help="suffix of the result files (default: the run folder's name)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--islands", choices=["keep", "ignore"], default=None,
                        help="foreground pseudo-labels outside each slice's largest foreground region: kept, or left "
                             "out of every rule's confident set (default: the recipe's method.pseudo_label.foreground_islands)")
    args = parser.parse_args()

    state = load_checkpoint(args.checkpoint, map_location="cpu")
    recipe_path = args.checkpoint.parent.parent / "recipe.yaml"
    recipe = load_recipe(recipe_path, args.overrides)
    names = all_class_names(recipe)
    net = build_model(recipe.model, spatial_dims=2, in_channels=1, num_classes=recipe.data.num_classes)
    net.load_state_dict(state["teacher"] if state.get("teacher") is not None else state["inference"])
    net.eval()

    splits = resolve_splits(recipe.data)
    loaded, _ = check_splits(splits, recipe.data.num_classes, semi_supervised=True)
    slices = build_slice_set(loaded["unlabeled"], tuple(recipe.data.input_size), with_labels=False,
                             audit=audit_labels(loaded["unlabeled"], recipe.data.num_classes))
    if slices.audit is None:
        raise SystemExit("the unlabeled cases have no label files on disk: nothing to score against")
    divisor = size_divisor(recipe.model)
    classwise = recipe.method.pseudo_label.threshold == "classwise"
    islands = args.islands or recipe.method.pseudo_label.foreground_islands
    lines = [
        "| rule | threshold | confident pixels (%) | " + " | ".join(f"{c} precision / recall / as background (%)" for c in names[1:]) + " |",
        "| --- | --- | ---: | " + " | ".join("---:" for _ in names[1:]) + " |",
    ]
    records = []
    for threshold in (["fixed", "classwise"] if classwise else ["fixed"]):
        for rule, scales, fuse in RULES:
            labels, valid = [], []
            with torch.no_grad():
                per_batch = []
                for start in range(0, len(slices), args.batch):
                    images = slices.images[start:start + args.batch]
                    per_scale = scale_probabilities(net, images, scales, divisor)
                    per_batch.append((per_scale, fuse_probabilities(per_scale, "mean" if fuse.startswith("vote") else fuse)))  # agree: the mean
                # class-wise thresholds from this teacher's mean confidence per class over the whole set
                fused_all = torch.cat([f for _, f in per_batch])
                conf_all, label_all = fused_all.max(1)
                k = fused_all.shape[1]
                if threshold == "classwise":  # one update over the whole set: the class means themselves
                    tracker = ClasswiseThreshold(k)
                    tracker.update(label_all, conf_all)
                    bars = tracker.thresholds(recipe.method.conf_thresh)
                else:
                    bars = torch.full((k,), float(recipe.method.conf_thresh))
                for per_scale, fused in per_batch:
                    conf, lab = fused.max(1)
                    if fuse == "vote_any_bg_all":
                        ok = vote_valid(per_scale, lab, bars, min_votes=1, background_votes=len(per_scale))
                    elif fuse.startswith("vote"):
                        ok = vote_valid(per_scale, lab, bars, min_votes=1 if fuse == "vote_any" else None)
                    elif fuse == "agree":
                        lab, ok = agree_labels(per_scale, lab, bars)
                    else:
                        ok = confident(lab, conf, bars)
                    if islands == "ignore":
                        ok = ok & ~foreground_islands(lab)
                    labels.append(lab)
                    valid.append(ok)
            stats = pseudo_label_stats(torch.cat(labels), torch.cat(valid), names, slices.audit.long())
            records.append({"rule": rule, "threshold": threshold, **stats})
            cells = [
                f"{100 * stats[f'pl_precision_{c}']:.1f} / {100 * stats[f'pl_recall_{c}']:.1f} / {100 * stats[f'pl_as_background_{c}']:.1f}"
                for c in names[1:]
            ]
            lines.append(f"| {rule} | {threshold} | {100 * stats['pl_valid_frac']:.1f} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + (
        f"\n\nTeacher of {args.checkpoint} (iteration {state['iteration']}); {len(slices)} unlabeled slices of "
        f"{len(loaded['unlabeled'])} cases, no augmentation; conf_thresh {recipe.method.conf_thresh}; foreground islands {islands}. Class-wise thresholds "
        "are conf_thresh x (the class's mean confidence / the highest class mean) over the whole set."
    )
    name = args.name or args.checkpoint.parent.parent.name
    save(f"pseudo_labels_{name}", table, {"checkpoint": str(args.checkpoint), "rows": records})


if __name__ == "__main__":
    main()
