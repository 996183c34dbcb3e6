"""Small fake Pascal VOC 2012 and Cityscapes trees in the real layouts, for tests.

VOC: JPEGImages/*.jpg, SegmentationClass/*.png (palette PNGs, 255 on object borders),
SegmentationClassAug/*.png (grayscale index PNGs), ImageSets/Segmentation/{train,val}.txt.
Cityscapes: leftImg8bit/<split>/<city>/*_leftImg8bit.png with gtFine/<split>/<city>/*_gtFine_labelTrainIds.png,
or only *_gtFine_labelIds.png where `label_ids_only` names the city.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from maskmatch_med.data.natural import voc_palette


def _scene(rng: np.random.Generator, h: int, w: int, classes: list[int], border: bool) -> tuple[np.ndarray, np.ndarray]:
    """A mask with a few class rectangles (optionally a 255 outline) and an image whose colour follows it."""
    mask = np.zeros((h, w), dtype=np.uint8)
    for cls in classes:
        top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
        bh, bw = rng.integers(h // 4, h // 2), rng.integers(w // 4, w // 2)
        mask[top : top + bh, left : left + bw] = cls
        if border:
            mask[top, left : left + bw] = 255
            mask[top : top + bh, left] = 255
    colours = rng.integers(0, 256, size=(256, 3))
    image = colours[mask].astype(np.float64) + rng.normal(0, 12, size=(h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def make_voc(root: Path, n_fine: int = 6, n_aug_only: int = 4, n_val: int = 2, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    fine = [f"2007_{i:06d}" for i in range(n_fine)]
    aug = [f"2008_{i:06d}" for i in range(n_aug_only)]
    val = [f"2009_{i:06d}" for i in range(n_val)]
    for index, sample_id in enumerate(fine + aug + val):
        h, w = 40 + 4 * (index % 3), 52 - 4 * (index % 2)
        image, mask = _scene(rng, h, w, [1 + index % 20, 1 + (index * 7) % 20], border=True)
        Image.fromarray(image).save(root / "JPEGImages" / f"{sample_id}.jpg", quality=95)
        if sample_id not in aug:
            label = Image.fromarray(mask, mode="P")
            label.putpalette(palette)
            label.save(root / "SegmentationClass" / f"{sample_id}.png")
        if sample_id not in val:  # SBD-style masks: grayscale indices, no borders
            Image.fromarray(np.where(mask == 255, 0, mask).astype(np.uint8), mode="L").save(root / "SegmentationClassAug" / f"{sample_id}.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("".join(f"{i}\n" for i in fine))
    (root / "ImageSets/Segmentation/val.txt").write_text("".join(f"{i}\n" for i in val))
    return root


_TRAIN_ID_TO_LABEL_ID = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


def make_cityscapes(root: Path, per_city: int = 3, seed: int = 0, label_ids_only: str = "bremen") -> Path:
    rng = np.random.default_rng(seed)
    cities = {"train": ["aachen", "bremen"], "val": ["frankfurt"]}
    for split, names in cities.items():
        for city in names:
            (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            for k in range(per_city):
                stem = f"{city}_{k:06d}_000019"
                image, train_ids = _scene(rng, 48, 96, [int(c) for c in rng.integers(0, 19, size=3)], border=True)
                Image.fromarray(image).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
                gt = root / "gtFine" / split / city
                if city != label_ids_only:
                    Image.fromarray(train_ids, mode="L").save(gt / f"{stem}_gtFine_labelTrainIds.png")
                lut = np.zeros(256, dtype=np.uint8)  # 255 (ignore) -> label id 0 ("unlabeled")
                lut[:19] = _TRAIN_ID_TO_LABEL_ID
                Image.fromarray(lut[train_ids], mode="L").save(gt / f"{stem}_gtFine_labelIds.png")
    return root
