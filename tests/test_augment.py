import pytest
import torch

from maskmatch_med.method.augment import cutmix, cutmix_box_mask, strong_augment, weak_augment


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _square_batch(b=4, h=32, w=40):
    images = torch.zeros(b, 1, h, w)
    labels = torch.zeros(b, h, w, dtype=torch.long)
    images[:, :, 6:16, 20:32] = 1.0
    labels[:, 6:16, 20:32] = 3
    return images, labels


# ------------------------------------------------------------------------------------------ weak


def test_weak_identity_params_reproduce_input():
    images, labels = _square_batch()
    out, lab = weak_augment(images, labels, _gen(), rotate_deg=0.0, scale_range=(1.0, 1.0), flip_prob=0.0)
    assert torch.equal(out, images) and torch.equal(lab, labels)


def test_weak_flips_follow_tensor_axes():
    images = torch.randn(2, 2, 6, 8)
    labels = torch.randint(0, 4, (2, 6, 8))
    out, lab = weak_augment(images, labels, _gen(), rotate_deg=0.0, scale_range=(1.0, 1.0), flip_prob=1.0)
    assert torch.allclose(out, images.flip(2, 3), atol=1e-5)
    assert torch.equal(lab, labels.flip(1, 2))


def test_weak_keeps_image_label_alignment():
    images, labels = _square_batch(b=6)
    out, lab = weak_augment(images, labels, _gen(3))
    assert out.shape == images.shape and lab.shape == labels.shape and lab.dtype == torch.long
    bright = out[:, 0] > 0.5
    fg = lab == 3
    inter = (bright & fg).sum(dim=(1, 2)).float()
    union = (bright | fg).sum(dim=(1, 2)).float()
    assert (inter / union > 0.85).all()
    assert set(lab.unique().tolist()) <= {0, 3}


def test_weak_rotation_is_rigid_on_non_square_images():
    h, w = 32, 64
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    disc = ((yy**2 + xx**2) <= 10**2).long()
    labels = disc.expand(4, h, w).clone()
    images = labels[:, None].float()
    _, lab = weak_augment(images, labels, _gen(1), rotate_deg=45.0, scale_range=(1.0, 1.0), flip_prob=0.5)
    # a centred disc is invariant to rotations and flips about the centre (no shear from the aspect ratio)
    agree = (lab == labels).float().mean(dim=(1, 2))
    assert (agree > 0.98).all()


def test_weak_labels_stay_in_label_set_and_outside_fill():
    g = _gen(4)
    labels = torch.tensor([0, 2, 5])[torch.randint(0, 3, (3, 16, 16), generator=g)]
    images = labels[:, None].float()
    _, lab = weak_augment(images, labels, _gen(5))
    assert set(lab.unique().tolist()) <= {0, 2, 5}
    # zooming out brings in pixels from outside the input: they become ignore_index
    _, lab = weak_augment(images, labels, _gen(5), scale_range=(0.5, 0.5), ignore_index=255)
    assert (lab[:, 0, 0] == 255).all() and (lab[:, -1, -1] == 255).all()
    assert set(lab.unique().tolist()) <= {0, 2, 5, 255}
    img, _ = weak_augment(images + 1.0, None, _gen(5), scale_range=(0.5, 0.5))
    assert (img[:, :, 0, 0] == 0).all()


def test_weak_deterministic_with_generator():
    images, labels = _square_batch()
    a = weak_augment(images, labels, _gen(7))
    b = weak_augment(images, labels, _gen(7))
    c = weak_augment(images, labels, _gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_weak_3d_is_in_plane():
    g = _gen(9)
    base = torch.rand(2, 1, 12, 10, generator=g)
    depth = 3
    vol = torch.stack([base * (k + 1) for k in range(depth)], dim=-1)  # (B, 1, H, W, D)
    labels = (vol[:, 0] > 1.0).long()
    out3, lab3 = weak_augment(vol, labels, _gen(11))
    assert out3.shape == vol.shape and lab3.shape == labels.shape
    for k in range(depth):  # same draws -> each slice transformed like the 2D image
        out2, lab2 = weak_augment(vol[..., k], labels[..., k], _gen(11))
        assert torch.allclose(out3[..., k], out2, atol=1e-4)
        assert (lab3[..., k] == lab2).float().mean() > 0.99


# ---------------------------------------------------------------------------------------- strong


def test_strong_changes_intensities_not_shape_and_is_deterministic():
    x = torch.randn(4, 2, 16, 16, generator=_gen())
    a = strong_augment(x, _gen(1), apply_prob=1.0)
    b = strong_augment(x, _gen(1), apply_prob=1.0)
    c = strong_augment(x, _gen(2), apply_prob=1.0)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert ((a - x).abs().amax(dim=(1, 2, 3)) > 1e-3).all()


def test_strong_no_op_when_disabled():
    x = torch.randn(3, 1, 8, 8, 4, generator=_gen())
    assert torch.equal(strong_augment(x, _gen(), apply_prob=0.0, blur_prob=0.0), x)


def test_strong_blur_only():
    x = torch.randn(2, 1, 16, 16, 3, generator=_gen())
    y = strong_augment(x, _gen(), apply_prob=0.0, blur_prob=1.0, blur_sigma=(1.0, 1.5))
    assert y.std() < 0.8 * x.std()  # smoothed
    assert torch.allclose(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.15)
    const = torch.full((2, 1, 8, 8), 0.7)
    assert torch.allclose(strong_augment(const, _gen(), apply_prob=0.0, blur_prob=1.0), const, atol=1e-6)


# ---------------------------------------------------------------------------------------- cutmix


def test_cutmix_box_area_and_shape_2d():
    box = cutmix_box_mask(200, (40, 40), prob=1.0, generator=_gen(3))
    assert box.shape == (200, 1, 40, 40) and box.dtype == torch.bool
    frac = box.float().mean(dim=(1, 2, 3))
    assert (frac >= 0.02 * 0.8).all() and (frac <= 0.4 * 1.2).all()
    # each box is one rectangle: its pixel count equals the product of its extents
    rows = box[:, 0].any(2).sum(1)
    cols = box[:, 0].any(1).sum(1)
    assert torch.equal(box.sum(dim=(1, 2, 3)), rows * cols)


def test_cutmix_box_3d_and_prob():
    box = cutmix_box_mask(50, (24, 24, 8), prob=1.0, generator=_gen(4))
    assert box.shape == (50, 1, 24, 24, 8)
    plane = box[:, 0].any(-1).float().mean(dim=(1, 2))
    assert (plane >= 0.02 * 0.7).all() and (plane <= 0.4 * 1.3).all()
    assert (box.sum(dim=(1, 2, 3, 4)) > 0).all()
    assert not cutmix_box_mask(20, (16, 16), prob=0.0, generator=_gen()).any()
    some = cutmix_box_mask(400, (8, 8), prob=0.5, generator=_gen(5)).flatten(1).any(1).float().mean()
    assert 0.4 < some < 0.6
    a = cutmix_box_mask(4, (16, 16, 4), generator=_gen(6))
    assert torch.equal(a, cutmix_box_mask(4, (16, 16, 4), generator=_gen(6)))


def test_cutmix_keeps_images_and_labels_consistent():
    b = 6
    idx = torch.arange(b, dtype=torch.float32)
    images = idx.view(b, 1, 1, 1).expand(b, 2, 16, 16).clone()  # value encodes the sample
    labels = (idx.long() * 10).view(b, 1, 1).expand(b, 16, 16).clone()
    conf = idx.view(b, 1, 1).expand(b, 16, 16) / 10
    box = cutmix_box_mask(b, (16, 16), prob=1.0, generator=_gen(2))
    partner = torch.randperm(b, generator=_gen(3))
    mi, ml, mc = cutmix(images, box, partner), cutmix(labels, box, partner), cutmix(conf, box, partner)
    assert mi.shape == images.shape and ml.shape == labels.shape and ml.dtype == torch.long
    assert torch.equal(mi[:, 0].long() * 10, ml) and torch.equal(mi[:, 1], mi[:, 0])
    assert torch.allclose(mc, mi[:, 0] / 10)
    expected = torch.where(box[:, 0], partner.view(b, 1, 1).float(), idx.view(b, 1, 1))
    assert torch.equal(mi[:, 0], expected)
    with pytest.raises(ValueError):
        cutmix(images[..., :8], box, partner)
