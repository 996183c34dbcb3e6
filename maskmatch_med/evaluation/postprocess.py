"""Optional clean-up of predicted label maps (`predict --largest-component`).

A single anatomical structure per class (heart chambers, most organs) is one connected object, so
islands elsewhere (e.g. a vessel cross-section mistaken for the LV blood pool) are false positives.
As in nnU-Net, this is a choice to check on validation data, not a default.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def keep_largest_component(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per foreground class, keep only its largest face-connected component; the rest becomes 0."""
    cleaned = labels.copy()
    for cls in range(1, num_classes):
        components, count = ndimage.label(labels == cls)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        cleaned[(components > 0) & (components != sizes.argmax())] = 0
    return cleaned
