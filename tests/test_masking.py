import pytest
import torch

from maskmatch_med.method.masking import apply_patch_mask, patch_keep_mask


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _patch_view(keep, patch):
    """(B, 1, *spatial) -> per patch values, assuming divisible shapes: (B, n_patches, prod(patch))."""
    b = keep.shape[0]
    spatial = keep.shape[2:]
    x = keep[:, 0]
    shape = [b]
    for s, p in zip(spatial, patch):
        shape += [s // p, p]
    x = x.reshape(shape)
    nd = len(spatial)
    perm = [0] + [1 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)]
    x = x.permute(perm)
    return x.reshape(b, -1, int(torch.tensor(patch).prod()))


@pytest.mark.parametrize(
    "spatial,patch",
    [((64, 64), (4, 4)), ((32, 32, 8), (4, 4, 2)), ((64, 64, 4), (16, 16, 2))],
)
@pytest.mark.parametrize("ratio", [0.3, 0.7])
def test_drop_ratio_and_patch_geometry(spatial, patch, ratio):
    keep = patch_keep_mask(16, spatial, patch, ratio, generator=_gen(1))
    assert keep.dtype == torch.bool and keep.shape == (16, 1, *spatial)
    per_patch = _patch_view(keep, patch)
    # every patch is entirely kept or entirely dropped
    assert torch.all(per_patch.all(-1) | (~per_patch).all(-1))
    dropped = (~per_patch[..., 0]).float()
    n = dropped.numel()
    tol = 4 * (ratio * (1 - ratio) / n) ** 0.5
    assert abs(dropped.mean().item() - ratio) < tol


def test_int_patch_size_is_isotropic():
    keep = patch_keep_mask(4, (8, 12, 16), 4, 0.5, generator=_gen(2))
    per_patch = _patch_view(keep, (4, 4, 4))
    assert torch.all(per_patch.all(-1) | (~per_patch).all(-1))


def test_non_divisible_shape_is_cropped_grid():
    keep = patch_keep_mask(3, (10, 7), (4, 3), 0.5, generator=_gen(3))
    assert keep.shape == (3, 1, 10, 7)
    # pad to the ceiled grid by replicating the edge patches' values, then check block constancy
    padded = torch.nn.functional.pad(keep.float(), (0, 2, 0, 2), mode="replicate").bool()
    per_patch = _patch_view(padded, (4, 3))
    assert torch.all(per_patch.all(-1) | (~per_patch).all(-1))


def test_deterministic_with_generator():
    a = patch_keep_mask(2, (16, 16, 4), (4, 4, 2), 0.7, generator=_gen(5))
    b = patch_keep_mask(2, (16, 16, 4), (4, 4, 2), 0.7, generator=_gen(5))
    c = patch_keep_mask(2, (16, 16, 4), (4, 4, 2), 0.7, generator=_gen(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_ratio_extremes():
    assert patch_keep_mask(2, (9, 9), 2, 0.0, generator=_gen()).all()
    assert not patch_keep_mask(2, (9, 9), 2, 1.0, generator=_gen()).any()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(ratio=-0.1),
        dict(ratio=1.1),
        dict(ratio=float("nan")),
        dict(patch_size=0),
        dict(patch_size=(4, 0)),
        dict(patch_size=(4, 4, 4)),
    ],
)
def test_invalid_arguments(kwargs):
    args = dict(batch_size=1, spatial_shape=(8, 8), patch_size=4, ratio=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError):
        patch_keep_mask(**args)


def test_apply_patch_mask_fills_exactly_dropped_region():
    images = torch.randn(2, 3, 8, 8, 4) + 5.0  # no zeros by chance
    keep = patch_keep_mask(2, (8, 8, 4), (4, 4, 2), 0.5, generator=_gen(7))
    assert keep.any() and not keep.all()
    out = apply_patch_mask(images, keep, fill=-1.5)
    k = keep.expand_as(images)
    assert torch.equal(out[k], images[k])
    assert torch.all(out[~k] == -1.5)
    assert torch.equal(apply_patch_mask(images, keep)[~k], torch.zeros(int((~k).sum())))
    with pytest.raises(ValueError):
        apply_patch_mask(images, keep[..., :2])
