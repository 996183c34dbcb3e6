"""Natural-image datasets: Pascal VOC 2012 and Cityscapes trees, UniMatch-format split files.

Split files (UniMatch's format, so its published splits work as they are): `labeled.txt` and
`unlabeled.txt` in one directory, `val.txt` there or in the directory above (where UniMatch keeps one
for all its splits), one sample per line, `IMAGE MASK` as paths relative to
the dataset root (the mask is optional in `unlabeled.txt`), e.g.

    JPEGImages/2007_000032.jpg SegmentationClass/2007_000032.png
    leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png

Masks hold class indices with 255 = ignore: VOC palette PNGs (SegmentationClass) or grayscale PNGs
(SegmentationClassAug), Cityscapes `*_labelTrainIds.png`. Where a split names a labelTrainIds file
that does not exist but the matching `*_labelIds.png` does, the labelIds are mapped to trainIds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from maskmatch_med.errors import UserError

IGNORE_INDEX = 255
SPLIT_FILES = {"labeled": "labeled.txt", "unlabeled": "unlabeled.txt", "validation": "val.txt"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # foreground; background is class 0
CITYSCAPES_CLASSES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation", "terrain",
    "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
]
# Cityscapes labelIds -> trainIds (cityscapesScripts' labels.py); every other id is ignored.
_CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                         26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
LABEL_IDS_TO_TRAIN_IDS = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _label_id, _train_id in _CITYSCAPES_TRAIN_IDS.items():
    LABEL_IDS_TO_TRAIN_IDS[_label_id] = _train_id

CITYSCAPES_COLOURS = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
]


def voc_palette() -> list[int]:
    """The 256-entry Pascal VOC colour map (flat RGB list), e.g. 1 -> (128, 0, 0), 255 -> (224, 224, 192)."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


def cityscapes_palette() -> list[int]:
    """Cityscapes trainId colours; 255 (ignore) and unused entries are black."""
    palette = [0] * (256 * 3)
    for index, colour in enumerate(CITYSCAPES_COLOURS):
        palette[3 * index : 3 * index + 3] = colour
    return palette


def palette_for(layout: str) -> list[int]:
    return cityscapes_palette() if layout == "cityscapes" else voc_palette()


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path | None  # None: unlabeled, or a line without a mask
    source: str  # "FILE:LINE" of the split file, for error messages


Splits = dict[str, list[Sample]]


def read_split_file(path: Path, root: Path, need_mask: bool) -> list[Sample]:
    """One `IMAGE [MASK]` pair per line, relative to `root`; blank lines and `#` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: split file not found")
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 2 or (need_mask and len(fields) != 2):
            want = "IMAGE MASK" if need_mask else "IMAGE [MASK]"
            raise UserError(f"{path}:{number}: expected '{want}' (paths relative to data.root), got {line.strip()!r}")
        mask = root / fields[1] if len(fields) == 2 else None
        samples.append(Sample(root / fields[0], mask, f"{path}:{number}"))
    if not samples:
        raise UserError(f"{path}: no samples listed")
    return samples


def splits_dir(data) -> Path:
    if data.splits is None:
        raise UserError(f"data.splits: not set; give a directory with {', '.join(SPLIT_FILES.values())} (e.g. data_manifests/{data.layout}/<split>)")
    return Path(data.splits)


def resolve_natural_splits(data, semi_supervised: bool = True) -> Splits:
    """The labeled, unlabeled (when semi-supervised) and validation samples named by data.splits."""
    directory, root = splits_dir(data), Path(data.root)
    if not root.is_dir():
        raise UserError(f"data.root: {root} is not a directory")
    if not directory.is_dir():
        raise UserError(
            f"data.splits: {directory} is not a directory; point it at UniMatch's splits/<dataset>/<split> or write one with "
            f"`maskmatch-med manifest {data.layout} --root {root} --labeled N --out {directory}`"
        )
    splits = {"labeled": read_split_file(directory / SPLIT_FILES["labeled"], root, need_mask=True)}
    if semi_supervised:
        splits["unlabeled"] = read_split_file(directory / SPLIT_FILES["unlabeled"], root, need_mask=False)
    splits["validation"] = read_split_file(validation_file(directory), root, need_mask=True)
    return splits


def validation_file(directory: Path) -> Path:
    """`val.txt` in the split directory or, as in UniMatch's splits/<dataset>/val.txt shared by all
    its splits, in the directory above."""
    own, shared = directory / SPLIT_FILES["validation"], directory.parent / SPLIT_FILES["validation"]
    if own.is_file() or not shared.is_file():
        return own
    return shared


def existing_mask(mask: Path) -> Path:
    """The mask file to read: the named one; else Cityscapes labelIds standing in for missing
    labelTrainIds, or VOC's SegmentationClassAug for a SegmentationClass mask that only SBD provides
    (UniMatch's lists name SegmentationClass/ for all 10582 images; a standard tree keeps them apart)."""
    if mask.is_file():
        return mask
    if mask.name.endswith("_labelTrainIds.png"):
        label_ids = mask.with_name(mask.name[: -len("_labelTrainIds.png")] + "_labelIds.png")
        if label_ids.is_file():
            return label_ids
    if mask.parent.name == "SegmentationClass":
        aug = mask.parent.with_name("SegmentationClassAug") / mask.name
        if aug.is_file():
            return aug
    return mask


def check_natural_splits(splits: Splits) -> list[str]:
    """Missing or unreadable files and image/mask size mismatches, one line per problem (headers only)."""
    problems = []
    for name, samples in splits.items():
        for sample in samples:
            try:
                with Image.open(sample.image) as image:
                    size = image.size
            except FileNotFoundError:
                problems.append(f"{sample.image}: image not found ({name} split, {sample.source})")
                continue
            except Exception as error:  # PIL raises several types for corrupt or foreign files
                problems.append(f"{sample.image}: not a readable image ({type(error).__name__}; {sample.source})")
                continue
            if sample.mask is None or name == "unlabeled":
                continue
            mask = existing_mask(sample.mask)
            try:
                with Image.open(mask) as label:
                    mask_size, mode = label.size, label.mode
            except FileNotFoundError:
                problems.append(f"{sample.mask}: mask not found ({name} split, {sample.source})")
                continue
            except Exception as error:
                problems.append(f"{mask}: not a readable mask ({type(error).__name__}; {sample.source})")
                continue
            if mask_size != size:
                problems.append(f"{mask}: mask is {mask_size[0]}x{mask_size[1]} but its image {sample.image.name} is {size[0]}x{size[1]}")
            elif mode not in ("P", "L"):
                problems.append(f"{mask}: mask mode {mode}; expected a palette or grayscale PNG of class indices")
    return problems


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))
    except Exception as error:
        raise UserError(f"{path}: not a readable image ({type(error).__name__})") from None


def read_mask(path: Path, num_classes: int) -> np.ndarray:
    """(H, W) uint8 class indices, 255 = ignore; Cityscapes labelIds are mapped to trainIds."""
    path = existing_mask(path)
    try:
        with Image.open(path) as label:
            array = np.array(label)
    except Exception as error:
        raise UserError(f"{path}: not a readable mask ({type(error).__name__})") from None
    if array.ndim != 2 or array.dtype != np.uint8:
        raise UserError(f"{path}: mask must be a single-channel 8-bit PNG of class indices, got {array.dtype} {array.shape}")
    if path.name.endswith("_labelIds.png"):
        array = LABEL_IDS_TO_TRAIN_IDS[array]
    bad = (array >= num_classes) & (array != IGNORE_INDEX)
    if bad.any():
        raise UserError(f"{path}: mask value {int(array[bad][0])} outside 0..{num_classes - 1} and not {IGNORE_INDEX} (ignore)")
    return array


def image_files(given: Path) -> list[Path]:
    """A JPG/PNG file, or the JPG/PNG files directly in a directory (sorted)."""
    given = Path(given)
    if given.is_file():
        if given.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"{given}: not a JPG or PNG file")
        return [given]
    if not given.is_dir():
        raise UserError(f"{given}: input not found")
    files = sorted(p for p in given.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{given}: no JPG or PNG images in this directory")
    return files


# ---------------------------------------------------------------------------------------- manifests


def _draw_count(labeled: str, pool_size: int) -> tuple[int, bool]:
    """`--labeled`: an integer count, or a fraction in (0, 1) such as 0.0625 or 1/16. Returns (count, is_fraction)."""
    text = labeled.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"--labeled: {labeled!r} is neither a count (92) nor a fraction (1/16, 0.0625)") from None
    if value.is_integer() and value >= 1:
        return int(value), False
    if not 0 < value < 1:
        raise UserError(f"--labeled: {labeled!r} must be a count >= 1 or a fraction between 0 and 1")
    # Rounded up, which gives the published counts: 1/16 of 2975 -> 186, of 10582 -> 662
    return max(1, math.ceil(value * pool_size - 1e-9)), True


def _ids_from(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def voc_pools(root: Path) -> tuple[list[str], list[str], list[str], str]:
    """(training pool, fine training ids, val ids, mask folder of the pool) of a VOC 2012 tree.

    val = ImageSets/Segmentation/val.txt; fine = ImageSets/Segmentation/train.txt (the 1464 images with
    SegmentationClass masks); the pool is every SegmentationClassAug mask outside val when that folder
    exists (the 10582 augmented set), else the fine set.
    """
    sets = root / "ImageSets" / "Segmentation"
    for name in ("train.txt", "val.txt"):
        if not (sets / name).is_file():
            raise UserError(f"{sets / name}: not found; --root must be a VOC2012 folder (JPEGImages, SegmentationClass, ImageSets)")
    fine, val = _ids_from(sets / "train.txt"), _ids_from(sets / "val.txt")
    aug = root / "SegmentationClassAug"
    if aug.is_dir():
        excluded = set(val)
        return sorted(p.stem for p in aug.glob("*.png") if p.stem not in excluded), fine, val, "SegmentationClassAug"
    return sorted(fine), fine, val, "SegmentationClass"


def _voc_line(root: Path, sample_id: str, mask_folder: str) -> str:
    # Fine masks are preferred where they exist; SBD-derived Aug masks fill in the rest.
    folder = "SegmentationClass" if (root / "SegmentationClass" / f"{sample_id}.png").is_file() else mask_folder
    return f"JPEGImages/{sample_id}.jpg {folder}/{sample_id}.png"


def _cityscapes_pairs(root: Path, split: str) -> list[str]:
    images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    if not images:
        raise UserError(f"{root / 'leftImg8bit' / split}: no */*_leftImg8bit.png images; --root must be a Cityscapes folder")
    lines = []
    for image in images:
        rel = image.relative_to(root)
        stem = image.name[: -len("_leftImg8bit.png")]
        mask = Path("gtFine") / split / image.parent.name / f"{stem}_gtFine_labelTrainIds.png"
        lines.append(f"{rel.as_posix()} {mask.as_posix()}")
    return lines


def make_manifest(dataset: str, root: Path, labeled: str, seed: int, out: Path) -> dict[str, int]:
    """Write labeled.txt / unlabeled.txt / val.txt for a new split, reproducibly from `seed`.

    VOC: an integer count is drawn from the fine set (the "classic" protocol: 92 ... 1464), a fraction
    from the whole training pool ("blended": 1/16 of 10582). Cityscapes: from leftImg8bit/train (2975),
    a fraction of it or a count; val.txt lists leftImg8bit/val. The unlabeled set is the rest of the pool.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--root: {root} is not a directory")
    rng = np.random.default_rng(seed)
    if dataset == "voc":
        pool, fine, val, mask_folder = voc_pools(root)
        count, fraction = _draw_count(labeled, len(pool))
        source = sorted(pool) if fraction or not fine else sorted(fine)
        if count > len(source):
            raise UserError(f"--labeled: {count} labeled images requested but the {'pool' if fraction else 'fine set'} has {len(source)}")
        chosen = sorted(source[i] for i in rng.permutation(len(source))[:count])
        chosen_set = set(chosen)
        rest = [i for i in pool if i not in chosen_set]
        lines = {
            "labeled": [_voc_line(root, i, mask_folder) for i in chosen],
            "unlabeled": [_voc_line(root, i, mask_folder) for i in rest],
            "validation": [f"JPEGImages/{i}.jpg SegmentationClass/{i}.png" for i in val],
        }
    elif dataset == "cityscapes":
        pool = _cityscapes_pairs(root, "train")
        count, _ = _draw_count(labeled, len(pool))
        if count > len(pool):
            raise UserError(f"--labeled: {count} labeled images requested but leftImg8bit/train has {len(pool)}")
        picked = set(rng.permutation(len(pool))[:count].tolist())
        lines = {
            "labeled": [line for i, line in enumerate(pool) if i in picked],
            "unlabeled": [line for i, line in enumerate(pool) if i not in picked],
            "validation": _cityscapes_pairs(root, "val"),
        }
    else:
        raise UserError(f"manifest: unknown dataset {dataset!r} (available: voc, cityscapes)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, entries in lines.items():
        (out / SPLIT_FILES[name]).write_text("".join(f"{line}\n" for line in entries))
    return {name: len(entries) for name, entries in lines.items()}


def check_natural_recipe(recipe) -> str:
    """check-data for VOC/Cityscapes: every split line's files exist, open, and agree in size; then
    every mask is decoded and its values checked. Returns the summary; problems raise one UserError."""
    from maskmatch_med.data.checks import require_clean

    splits = resolve_natural_splits(recipe.data, semi_supervised=recipe.method.name != "supervised")
    problems = check_natural_splits(splits)
    if not problems:
        for name in ("labeled", "validation"):
            for sample in splits[name]:
                try:
                    read_mask(sample.mask, recipe.data.num_classes)
                except UserError as error:
                    problems.append(str(error))
    require_clean(problems)
    counts = ", ".join(f"{name} {len(samples)}" for name, samples in splits.items())
    return f"all images readable and consistent ({counts})"
