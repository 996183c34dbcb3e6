"""Natural-image inference: whole-image or sliding-window class probabilities, optionally ensembled over
test-time scales, and `predict` on a folder of JPG/PNG files writing palette PNGs of each input's size.

At each scale the image is resized (bilinear), predicted whole or by sliding windows, and the softmax
resized back to the image's size (the same rounding as the teacher's ensembles, method.ensemble); the
scales' probabilities are averaged. Scale 1 alone is the image as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from maskmatch_med.data.natural import image_files, palette_for, read_image
from maskmatch_med.engine.writers import atomic_path, write_json_atomic
from maskmatch_med.errors import UserError
from maskmatch_med.evaluation.postprocess import keep_largest_component
from maskmatch_med.method.ensemble import fuse_probabilities, scale_probabilities
from maskmatch_med.scenarios.photos.data import normalise
from maskmatch_med.scenarios.prediction import Predictions, require_readable, with_progress


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Window origins covering [0, length): every `stride`, the last one flush with the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, image: torch.Tensor, mode: str = "full", window: int = 801) -> torch.Tensor:
    """Softmax probabilities (1, K, H, W) for one normalised image (1, 3, H, W).

    `sliding`: windows of `window` px with a stride of 2/3 of it (UniMatch's Cityscapes protocol); the
    last window of each row/column is moved back to end at the image border, so every window is full
    size; overlapping probabilities are averaged.
    """
    if mode == "full":
        return torch.softmax(model(image).float(), dim=1)
    h, w = image.shape[2:]
    stride = max(1, int(window * 2 / 3))
    total, count = None, torch.zeros((1, 1, h, w), device=image.device)
    for top in _starts(h, window, stride):
        for left in _starts(w, window, stride):
            tile = image[:, :, top : top + window, left : left + window]
            probs = torch.softmax(model(tile).float(), dim=1)
            if total is None:
                total = torch.zeros((1, probs.shape[1], h, w), device=image.device)
            total[:, :, top : top + tile.shape[2], left : left + tile.shape[3]] += probs
            count[:, :, top : top + tile.shape[2], left : left + tile.shape[3]] += 1
    return total / count


def predict_labels(model: torch.nn.Module, rgb: np.ndarray, device: torch.device, mode: str, window: int,
                   scales: Sequence[float] = (1.0,)) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 class indices at the same size, ensembled over `scales`."""
    image = normalise(torch.from_numpy(rgb).to(device).permute(2, 0, 1)[None])
    per_scale = scale_probabilities(lambda x: predict_probabilities(model, x, mode, window), image, list(scales), softmax=False)
    return fuse_probabilities(per_scale, "mean").argmax(1)[0].to(torch.uint8).cpu().numpy()


def write_palette_png(labels: np.ndarray, palette: list[int], out_path: Path) -> Path:
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(palette)
    with atomic_path(out_path) as temp:
        image.save(temp, format="PNG")
    return out_path


def predict_image_files(
    model: torch.nn.Module, inputs: list[Path], output_dir: Path, layout: str, class_names: list[str], device: torch.device,
    mode: str, window: int, skip_existing: bool = False, progress: bool = False, scales: Sequence[float] = (1.0,),
    largest_component: bool = False,
) -> list[Path]:
    """Each input IMAGE.jpg/.png -> OUTPUT/IMAGE.png, a palette PNG of class indices of the input's size
    (with `largest_component`, only each class's largest connected region kept). Every image still to
    predict is decoded first, so a corrupt one is refused before anything is written."""
    output_dir = Path(output_dir)
    files = [f for given in inputs for f in image_files(given)]
    check_outputs(files, output_dir)
    kept = {path for path in files if skip_existing and (output_dir / f"{path.stem}.png").is_file()}
    require_readable([path for path in files if path not in kept], read_image)
    output_dir.mkdir(parents=True, exist_ok=True)
    palette, written, names = palette_for(layout), Predictions(), labels_json(layout, class_names)
    for path in with_progress(files, progress, unit="image"):
        out = output_dir / f"{path.stem}.png"
        if path not in kept:
            labels = predict_labels(model, read_image(path), device, mode, window, scales)
            if largest_component:
                labels = keep_largest_component(labels, len(names))
            write_palette_png(labels, palette, out)
        written.add(out, kept=path in kept)
    write_json_atomic(names, output_dir / "labels.json")
    return written


def check_outputs(files: list[Path], output_dir: Path) -> None:
    """Outputs never land in an input's directory (a .png input would be overwritten) nor collide."""
    resolved_out, seen = output_dir.resolve(), {}
    for path in files:
        if path.resolve().parent == resolved_out:
            raise UserError(f"{output_dir}: output directory is the directory of input {path.name}; choose another --output")
        if path.stem in seen:
            raise UserError(f"{output_dir / (path.stem + '.png')}: both {seen[path.stem]} and {path} would be written here")
        seen[path.stem] = path


def labels_json(layout: str, class_names: list[str]) -> dict[str, str]:
    """Class index -> name; VOC's background is class 0, Cityscapes' 19 classes are all named."""
    names = ["background", *class_names] if layout == "voc" else list(class_names)
    return {str(i): name for i, name in enumerate(names)}
