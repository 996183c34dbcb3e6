"""Batch-wise data augmentation on the training device: the weak view, the strong views and their mixing.

- :func:`weak_augment`: one random rotation / isotropic scale / flips per sample, applied to images
  (bilinear) and labels (nearest) with the same sampling grid.
- :func:`strong_augment`: per-sample intensity perturbations (brightness, contrast, gamma, blur, noise).
- :func:`colour_augment`: the natural-image strong view (colour jitter, grayscale, blur) of
  ImageNet-normalised RGB batches.
- :func:`cutmix_box_mask` and :func:`cutmix`: CutMix between samples of a batch; the same box and partner
  index mix images, pseudo-labels, confidences and valid masks identically.

Spatial axes follow the tensor order: 2D (B, C, H, W); 3D (B, C, X, Y, Z) with the first two spatial
axes in-plane (MONAI's layout, slice axis last). Random numbers are drawn with the optional generator
(on its device) and moved to the data's device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from maskmatch_med.method.masking import _draw

__all__ = ["weak_augment", "strong_augment", "colour_augment", "cutmix_box_mask", "cutmix", "copy_paste_box_mask", "copy_paste"]


def _spatial_dims(x: torch.Tensor, name: str = "images") -> int:
    nd = x.ndim - 2
    if nd not in (2, 3):
        raise ValueError(f"{name} must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
    return nd


def _uniform(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * u


# --------------------------------------------------------------------------------------------- weak


def weak_augment(
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    rotate_deg: float = 20.0,
    scale_range: tuple[float, float] = (0.85, 1.15),
    flip_prob: float = 0.5,
    ignore_index: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random rotation, isotropic scaling and flips, one draw per sample.

    The rotation is in the plane of the first two spatial axes (in-plane for 3D), uniform in
    [-rotate_deg, rotate_deg] degrees and measured in pixel units (no shear on non-square images); the
    scale is uniform in ``scale_range`` (> 1 zooms in); each of the first two spatial axes is flipped
    with probability ``flip_prob``. Images are resampled bilinearly (0 outside the input), labels with
    nearest neighbour (0 outside, or ``ignore_index`` if given).

    Args:
        images: float (B, C, *spatial).
        labels: optional integer (B, *spatial) (or (B, 1, *spatial)); returned in the same shape/dtype.

    Returns:
        (augmented images, augmented labels or None).
    """
    nd = _spatial_dims(images)
    b = images.shape[0]
    spatial = tuple(images.shape[2:])
    device = images.device
    lo, hi = float(scale_range[0]), float(scale_range[1])
    if lo <= 0 or hi < lo:
        raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range!r}")
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")

    squeeze_label = False
    if labels is not None:
        if labels.ndim == images.ndim and labels.shape[1] == 1:
            labels = labels[:, 0]
            squeeze_label = True
        if labels.shape[0] != b or tuple(labels.shape[1:]) != spatial:
            raise ValueError(f"labels {tuple(labels.shape)} do not fit images {tuple(images.shape)}")

    u = _draw((b, 4), generator)  # CPU (or the generator's device); the matrices are tiny
    angle = torch.deg2rad(_uniform(u[:, 0], -float(rotate_deg), float(rotate_deg)))
    scale = _uniform(u[:, 1], lo, hi)
    flip0 = torch.where(u[:, 2] < flip_prob, -1.0, 1.0)
    flip1 = torch.where(u[:, 3] < flip_prob, -1.0, 1.0)

    # Output -> input map in normalised coordinates (tensor axis order): n_in = S^-1 M S n_out, where
    # S = diag(size / 2) converts to pixel units about the centre and M = R(angle) F / scale.
    cos, sin = torch.cos(angle), torch.sin(angle)
    m = torch.zeros(b, nd, nd, dtype=torch.float32, device=u.device)
    m[:, 0, 0] = cos * flip0
    m[:, 0, 1] = -sin * flip1
    m[:, 1, 0] = sin * flip0
    m[:, 1, 1] = cos * flip1
    m[:, :2, :2] /= scale[:, None, None]
    for k in range(2, nd):
        m[:, k, k] = 1.0
    half = torch.tensor(spatial, dtype=torch.float32, device=u.device) / 2
    m = m * half[None, None, :] / half[None, :, None]
    # affine_grid orders the coordinates last-axis first (x = W, y = H, z = D): reverse both axes.
    theta = torch.zeros(b, nd, nd + 1, dtype=torch.float32, device=u.device)
    theta[:, :, :nd] = m.flip(1).flip(2)

    identity = torch.eye(nd, nd + 1, dtype=torch.float32, device=u.device)
    if bool((theta == identity).all()):
        return images.clone(), (None if labels is None else _restore(labels.clone(), squeeze_label))

    theta = theta.to(device)
    grid = F.affine_grid(theta, [b, 1, *spatial], align_corners=False)
    out_images = F.grid_sample(
        images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    if labels is None:
        return out_images, None
    # Shift labels by +1 so that samples from outside the input (zero padding) read as -1 afterwards.
    shifted = (labels.to(torch.float32) + 1.0).unsqueeze(1)
    warped = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
    warped = torch.round(warped).to(torch.long) - 1
    fill = 0 if ignore_index is None else int(ignore_index)
    warped = torch.where(warped < 0, torch.full_like(warped, fill), warped).to(labels.dtype)
    return out_images, _restore(warped, squeeze_label)


def _restore(labels: torch.Tensor, add_channel: bool) -> torch.Tensor:
    return labels.unsqueeze(1) if add_channel else labels


# ------------------------------------------------------------------------------------------- strong


def _gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(N, 2 * radius + 1) normalised 1D Gaussian kernels, one per sigma."""
    x = torch.arange(-radius, radius + 1, dtype=sigma.dtype, device=sigma.device)
    k = torch.exp(-0.5 * (x[None, :] / sigma[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def _blur_in_plane(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur along the first two spatial axes with one sigma per sample.

    A grouped convolution over (1, B*C, *spatial) applies every sample's own kernel in one call;
    borders are replicated.
    """
    b, c = x.shape[:2]
    spatial = x.shape[2:]
    nd = len(spatial)
    radius = max(1, int(math.ceil(3.0 * float(sigma.max()))))
    kernels = _gaussian_kernels(sigma, radius).to(x.dtype).repeat_interleave(c, dim=0)  # (B*C, K)
    conv = F.conv2d if nd == 2 else F.conv3d
    y = x.reshape(1, b * c, *spatial)
    for axis in range(2):
        shape = [b * c, 1] + [1] * nd
        shape[2 + axis] = 2 * radius + 1
        pad = [0, 0] * nd
        # F.pad lists pads last axis first
        pad_pos = 2 * (nd - 1 - axis)
        pad[pad_pos] = pad[pad_pos + 1] = radius
        y = F.pad(y, pad, mode="replicate")
        y = conv(y, kernels.reshape(shape), groups=b * c)
    return y.reshape(x.shape)


def strong_augment(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    brightness: float = 0.2,
    contrast: tuple[float, float] = (0.7, 1.3),
    gamma: tuple[float, float] = (0.7, 1.5),
    blur_prob: float = 0.5,
    blur_sigma: tuple[float, float] = (0.1, 1.5),
    noise_std: float = 0.1,
    apply_prob: float = 0.8,
) -> torch.Tensor:
    """Per-sample intensity perturbations of z-scored images (B, C, *spatial); geometry unchanged.

    In this order, each with its own random parameters per sample:

    - brightness: with probability ``apply_prob``, add a shift uniform in [-brightness, brightness];
    - contrast: with probability ``apply_prob``, scale around the per-channel mean by a factor uniform in
      ``contrast``;
    - gamma: with probability ``apply_prob``, rescale each channel to [0, 1] (min-max), raise to a power
      uniform in ``gamma`` and map back to the original range;
    - blur: with probability ``blur_prob``, Gaussian blur (sigma uniform in ``blur_sigma``) along the
      first two spatial axes (in-plane for 3D);
    - noise: with probability ``apply_prob``, add Gaussian noise with standard deviation ``noise_std``.

    The same number of random draws is made on every call, so a seeded generator reproduces the result.
    """
    _spatial_dims(images)
    for name, p in (("apply_prob", apply_prob), ("blur_prob", blur_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    if not 0 < blur_sigma[0] <= blur_sigma[1]:
        raise ValueError(f"blur_sigma must be 0 < low <= high, got {blur_sigma!r}")
    b = images.shape[0]
    device = images.device
    nd = images.ndim - 2
    bshape = (b,) + (1,) * (nd + 1)

    u = _draw((b, 9), generator, device)
    on_bright = (u[:, 0] < apply_prob).view(bshape)
    on_contrast = (u[:, 1] < apply_prob).view(bshape)
    on_gamma = (u[:, 2] < apply_prob).view(bshape)
    on_blur = (u[:, 3] < blur_prob).view(bshape)
    on_noise = (u[:, 4] < apply_prob).view(bshape)
    shift = _uniform(u[:, 5], -float(brightness), float(brightness)).view(bshape)
    factor = _uniform(u[:, 6], float(contrast[0]), float(contrast[1])).view(bshape)
    power = _uniform(u[:, 7], float(gamma[0]), float(gamma[1])).view(bshape)
    sigma = _uniform(u[:, 8], float(blur_sigma[0]), float(blur_sigma[1]))
    noise = _draw(images.shape, generator, device, normal=True)

    x = images.to(torch.float32)
    reduce_dims = tuple(range(2, x.ndim))

    x = torch.where(on_bright, x + shift, x)

    mean = x.mean(dim=reduce_dims, keepdim=True)
    x = torch.where(on_contrast, (x - mean) * factor + mean, x)

    lo = x.amin(dim=reduce_dims, keepdim=True)
    span = x.amax(dim=reduce_dims, keepdim=True) - lo
    unit = ((x - lo) / span.clamp_min(1e-8)).clamp(0.0, 1.0)
    x = torch.where(on_gamma, unit.pow(power) * span + lo, x)

    if bool(on_blur.any()):
        x = torch.where(on_blur, _blur_in_plane(x, sigma), x)

    x = torch.where(on_noise, x + float(noise_std) * noise, x)
    return x.to(images.dtype)


# ------------------------------------------------------------------------------ strong, natural RGB

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _grayscale(rgb: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (B, 1, H, W), as torchvision and PIL compute it."""
    return (0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3])


def _shift_hue(rgb: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of [0, 1] RGB (B, 3, H, W) by `shift` (B, 1, 1, 1) turns, via HSV."""
    r, g, b = rgb.unbind(1)
    maxc, _ = rgb.max(1)
    minc, _ = rgb.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    hue = (hue + shift[:, 0]) % 1.0
    # HSV -> RGB: each channel is v - v s max(0, min(k, 4 - k, 1)), k = (n + 6 h) mod 6 for n = 5, 3, 1
    out = []
    for n in (5.0, 3.0, 1.0):
        k = (n + hue * 6.0) % 6.0
        out.append(maxc - maxc * sat * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(out, 1)


def colour_augment(
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    jitter: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.25),
    jitter_prob: float = 0.8,
    grayscale_prob: float = 0.2,
    blur_prob: float = 0.5,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
) -> torch.Tensor:
    """UniMatch's strong view of ImageNet-normalised RGB (B, 3, H, W), per sample; geometry unchanged.

    With probability ``jitter_prob``: brightness, contrast and saturation factors uniform in
    [1 - j, 1 + j] and a hue rotation uniform in [-j_hue, j_hue] (torchvision's ColorJitter
    definitions, applied in that fixed order); then grayscale with probability ``grayscale_prob``; then
    a Gaussian blur (sigma uniform in ``blur_sigma``) with probability ``blur_prob``. Pixels are
    clamped to [0, 1] in RGB between steps and the result is normalised again.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"colour_augment needs RGB batches (B, 3, H, W), got {tuple(images.shape)}")
    b, device = images.shape[0], images.device
    bshape = (b, 1, 1, 1)
    u = _draw((b, 8), generator, device)
    on_jitter = (u[:, 0] < jitter_prob).view(bshape)
    bright = _uniform(u[:, 1], max(0.0, 1 - jitter[0]), 1 + jitter[0]).view(bshape)
    contrast = _uniform(u[:, 2], max(0.0, 1 - jitter[1]), 1 + jitter[1]).view(bshape)
    saturation = _uniform(u[:, 3], max(0.0, 1 - jitter[2]), 1 + jitter[2]).view(bshape)
    hue = _uniform(u[:, 4], -jitter[3], jitter[3]).view(bshape)
    on_gray = (u[:, 5] < grayscale_prob).view(bshape)
    on_blur = (u[:, 6] < blur_prob).view(bshape)
    sigma = _uniform(u[:, 7], float(blur_sigma[0]), float(blur_sigma[1]))

    mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = (images.float() * std + mean).clamp(0.0, 1.0)
    jittered = (x * bright).clamp(0.0, 1.0)
    jittered = ((jittered - _grayscale(jittered).mean((2, 3), keepdim=True)) * contrast
                + _grayscale(jittered).mean((2, 3), keepdim=True)).clamp(0.0, 1.0)
    gray = _grayscale(jittered)
    jittered = ((jittered - gray) * saturation + gray).clamp(0.0, 1.0)
    if jitter[3] > 0:
        jittered = _shift_hue(jittered, hue).clamp(0.0, 1.0)
    x = torch.where(on_jitter, jittered, x)
    x = torch.where(on_gray, _grayscale(x).expand_as(x), x)
    if bool(on_blur.any()):
        x = torch.where(on_blur, _blur_in_plane(x, sigma), x)
    return ((x - mean) / std).to(images.dtype)


# ------------------------------------------------------------------------------------------- cutmix


def cutmix_box_mask(
    batch_size: int,
    spatial_shape: Sequence[int],
    prob: float = 0.5,
    area_range: tuple[float, float] = (0.02, 0.4),
    aspect_range: tuple[float, float] = (0.3, 1 / 0.3),
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random CutMix boxes, bool (B, 1, *spatial); True inside the box.

    For each sample, with probability ``prob``, one axis-aligned box: its area in the plane of the first
    two spatial axes is a fraction uniform in ``area_range`` of that plane, its aspect ratio (extent along
    axis 0 / extent along axis 1, in pixels) log-uniform in ``aspect_range``; along any further axis (3D)
    it spans a fraction uniform in [sqrt(area_range[0]), sqrt(area_range[1])] of the extent. Boxes lie
    fully inside the image (an over-long side is clipped, which can only shrink the area), at least one
    pixel per axis.
    """
    spatial = tuple(int(s) for s in spatial_shape)
    nd = len(spatial)
    if nd < 2 or any(s < 1 for s in spatial):
        raise ValueError(f"spatial_shape must have at least 2 positive sizes, got {spatial_shape!r}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"prob must be in [0, 1], got {prob}")
    a_lo, a_hi = float(area_range[0]), float(area_range[1])
    r_lo, r_hi = float(aspect_range[0]), float(aspect_range[1])
    if not 0.0 < a_lo <= a_hi <= 1.0:
        raise ValueError(f"area_range must satisfy 0 < low <= high <= 1, got {area_range!r}")
    if not 0.0 < r_lo <= r_hi:
        raise ValueError(f"aspect_range must satisfy 0 < low <= high, got {aspect_range!r}")
    b = int(batch_size)

    u = _draw((b, 3 + 2 * nd), generator)  # small: drawn on the generator's device, moved at the end
    on = u[:, 0] < prob
    area = _uniform(u[:, 1], a_lo, a_hi) * spatial[0] * spatial[1]
    aspect = torch.exp(_uniform(u[:, 2], math.log(r_lo), math.log(r_hi)))
    lengths = [torch.sqrt(area * aspect), torch.sqrt(area / aspect)]
    for k in range(2, nd):
        frac = _uniform(u[:, 3 + nd + k], math.sqrt(a_lo), math.sqrt(a_hi))
        lengths.append(frac * spatial[k])

    # the per-sample box bounds are tiny: compute them where drawn, build the mask on `device`
    out_device = u.device if device is None else torch.device(device)
    inside = []
    for k, size in enumerate(spatial):
        length = torch.round(lengths[k]).clamp(1, size)
        start = torch.floor(u[:, 3 + k] * (size - length + 1)).clamp(max=size - length)
        start, stop = start.to(out_device), (start + length).to(out_device)
        idx = torch.arange(size, dtype=torch.float32, device=out_device)
        inside.append((idx[None, :] >= start[:, None]) & (idx[None, :] < stop[:, None]))

    mask = on.to(out_device).view((b,) + (1,) * nd)
    for k in range(nd):
        shape = [b] + [1] * nd
        shape[1 + k] = spatial[k]
        mask = mask & inside[k].view(shape)
    return mask.unsqueeze(1)


def cutmix(tensor: torch.Tensor, box: torch.Tensor, partner_index: torch.Tensor) -> torch.Tensor:
    """Replace ``tensor`` inside ``box`` by the partner sample's values: ``where(box, tensor[partner], tensor)``.

    Args:
        tensor: (B, C, *spatial) images / probabilities, or (B, *spatial) labels, confidences, valid masks.
        box: bool (B, 1, *spatial), e.g. from :func:`cutmix_box_mask`.
        partner_index: long (B,), the sample each one borrows its box content from (e.g. a permutation).

    Using the same ``box`` and ``partner_index`` for images and their pseudo-labels keeps them aligned.
    """
    if box.ndim < 3 or box.shape[1] != 1:
        raise ValueError(f"box must be (B, 1, *spatial), got {tuple(box.shape)}")
    if tensor.ndim == box.ndim:
        mask = box
        spatial = tuple(tensor.shape[2:])
    elif tensor.ndim == box.ndim - 1:
        mask = box[:, 0]
        spatial = tuple(tensor.shape[1:])
    else:
        raise ValueError(f"tensor {tuple(tensor.shape)} does not fit box {tuple(box.shape)}")
    if spatial != tuple(box.shape[2:]) or tensor.shape[0] != box.shape[0]:
        raise ValueError(f"tensor {tuple(tensor.shape)} does not fit box {tuple(box.shape)}")
    partner_index = partner_index.to(device=tensor.device, dtype=torch.long)
    if partner_index.shape != (tensor.shape[0],):
        raise ValueError(f"partner_index must be ({tensor.shape[0]},), got {tuple(partner_index.shape)}")
    if mask.dtype != torch.bool:
        mask = mask != 0
    return torch.where(mask.to(tensor.device), tensor[partner_index], tensor)


# ----------------------------------------------------------------------------- bidirectional copy-paste


def copy_paste_box_mask(
    batch_size: int,
    spatial_shape: Sequence[int],
    fraction: float = 2 / 3,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """BCP's boxes, bool (B, 1, *spatial); True inside: on every spatial axis a side of round(fraction x
    size) (at least 1 voxel) at a uniformly random position, one box per sample, in 2D and 3D alike."""
    spatial = tuple(int(s) for s in spatial_shape)
    if not spatial or any(s < 1 for s in spatial):
        raise ValueError(f"spatial_shape must hold positive sizes, got {spatial_shape!r}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    b, nd = int(batch_size), len(spatial)
    u = _draw((b, nd), generator)
    out_device = u.device if device is None else torch.device(device)
    mask = torch.ones((b,) + (1,) * nd, dtype=torch.bool, device=out_device)
    for k, size in enumerate(spatial):
        length = max(1, min(size, round(fraction * size)))
        start = torch.floor(u[:, k] * (size - length + 1)).clamp(max=size - length).to(out_device)
        idx = torch.arange(size, dtype=torch.float32, device=out_device)
        inside = (idx[None, :] >= start[:, None]) & (idx[None, :] < start[:, None] + length)
        shape = [b] + [1] * nd
        shape[1 + k] = size
        mask = mask & inside.view(shape)
    return mask.unsqueeze(1)


def copy_paste(inside: torch.Tensor, outside: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """``inside`` within the box, ``outside`` elsewhere; images (B, C, *spatial) or maps (B, *spatial).

    BCP mixes both ways with the same call: labeled content into unlabeled images
    (``copy_paste(labeled, unlabeled, box)``) and back (``copy_paste(unlabeled, labeled, box)``); mixing
    labels, pseudo-labels and weights with the same box keeps every pixel's own target.
    """
    if inside.shape != outside.shape:
        raise ValueError(f"inside {tuple(inside.shape)} and outside {tuple(outside.shape)} differ")
    if box.ndim < 3 or box.shape[1] != 1 or box.shape[0] != inside.shape[0]:
        raise ValueError(f"box must be (B, 1, *spatial) for {tuple(inside.shape)}, got {tuple(box.shape)}")
    mask = box if inside.ndim == box.ndim else box[:, 0]
    if tuple(mask.shape[-len(box.shape[2:]):]) != tuple(inside.shape[-len(box.shape[2:]):]):
        raise ValueError(f"box {tuple(box.shape)} does not fit {tuple(inside.shape)}")
    return torch.where(mask.to(inside.device), inside, outside)
