"""Natural images end to end on fake Pascal VOC and Cityscapes trees in the real layouts: split files,
manifests, DeepLabV3+ shapes and ImageNet weights, mIoU, OHEM, the colour strong view, both recipes
through the CLI (ResNet-50 at a 33 px crop, 2 iterations) and predict to palette PNGs."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from maskmatch_med.cli import main
from maskmatch_med.data.natural import (
    LABEL_IDS_TO_TRAIN_IDS, check_natural_splits, make_manifest, read_mask, read_split_file, resolve_natural_splits, voc_palette,
)
from maskmatch_med.errors import UserError
from natural_fakes import make_cityscapes, make_voc

TINY = ["data.crop_size=33", "model.backbone=resnet50", "train.batch_size=2", "train.unlabeled_batch_size=2",
        "train.val_every=2", "train.log_every=1", "method.mask.patch_size=8"]


def cli(*args) -> tuple[int, str, str]:
    """The console entry point in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err, argv = io.StringIO(), io.StringIO(), sys.argv
    sys.argv = ["maskmatch-med", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 0
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return make_voc(tmp_path_factory.mktemp("voc") / "VOC2012")


@pytest.fixture(scope="module")
def voc_splits(voc, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("voc_splits") / "2"
    make_manifest("voc", voc, "2", seed=0, out=out)
    return out


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> Path:
    return make_cityscapes(tmp_path_factory.mktemp("cs") / "cityscapes")


@pytest.fixture(scope="module")
def r50():
    """One ResNet-50 DeepLabV3+ shared by the model tests (building one is the slow part on a CPU)."""
    from maskmatch_med.networks.deeplabv3plus import DeepLabV3Plus

    return DeepLabV3Plus(num_classes=5, backbone="resnet50")


@pytest.fixture(scope="module")
def voc_run(voc, voc_splits, tmp_path_factory) -> Path:
    """recipes/voc.yaml (MaskMatch) through the CLI: 2 iterations at a 33 px crop. The recipe sets
    train.epochs; --set train.iterations=2 wins over it (it used to be ignored: 80 epochs)."""
    run = tmp_path_factory.mktemp("voc_run") / "run"
    code, out, err = cli("train", "recipes/voc.yaml", "--set", f"data.root={voc}", "--set", f"data.splits={voc_splits}",
                         "--set", "train.iterations=2", *[a for s in TINY for a in ("--set", s)],
                         "--output", run, "--no-progress")
    assert code == 0, err
    assert "best validation miou" in out
    return run


# ------------------------------------------------------------------------------------------- splits


def test_split_file_parsing(tmp_path):
    split = tmp_path / "labeled.txt"
    split.write_text("# UniMatch format\nJPEGImages/a.jpg SegmentationClass/a.png\n\nJPEGImages/b.jpg   SegmentationClass/b.png\n")
    samples = read_split_file(split, tmp_path / "root", need_mask=True)
    assert [(s.image, s.mask) for s in samples] == [
        (tmp_path / "root/JPEGImages/a.jpg", tmp_path / "root/SegmentationClass/a.png"),
        (tmp_path / "root/JPEGImages/b.jpg", tmp_path / "root/SegmentationClass/b.png"),
    ]
    assert samples[1].source == f"{split}:4"
    unlabeled = tmp_path / "unlabeled.txt"
    unlabeled.write_text("JPEGImages/c.jpg\n")
    assert read_split_file(unlabeled, tmp_path, need_mask=False)[0].mask is None
    with pytest.raises(UserError, match=r"labeled.txt:1: expected 'IMAGE MASK'"):
        read_split_file(unlabeled.rename(tmp_path / "labeled.txt"), tmp_path, need_mask=True)
    with pytest.raises(UserError, match=r"missing.txt: split file not found"):
        read_split_file(tmp_path / "missing.txt", tmp_path, need_mask=True)


def test_unimatch_layout_shares_val_txt_one_level_up(voc, voc_splits, tmp_path):
    from maskmatch_med.config import load_recipe

    # UniMatch: splits/pascal/val.txt beside splits/pascal/92/{labeled,unlabeled}.txt
    (tmp_path / "pascal/92").mkdir(parents=True)
    for name in ("labeled.txt", "unlabeled.txt"):
        (tmp_path / "pascal/92" / name).write_text((voc_splits / name).read_text())
    (tmp_path / "pascal/val.txt").write_text("JPEGImages/2009_000001.jpg SegmentationClass/2009_000001.png\n")
    recipe = load_recipe(Path("recipes/voc.yaml"), [f"data.root={voc}", f"data.splits={tmp_path / 'pascal/92'}"])
    splits = resolve_natural_splits(recipe.data)
    assert [s.image.name for s in splits["validation"]] == ["2009_000001.jpg"]
    assert splits["validation"][0].source == f"{tmp_path / 'pascal/val.txt'}:1"


def test_split_problems_name_the_file(voc, voc_splits, tmp_path):
    from maskmatch_med.config import load_recipe

    recipe = load_recipe(Path("recipes/voc.yaml"), [f"data.root={voc}", f"data.splits={voc_splits}"])
    assert check_natural_splits(resolve_natural_splits(recipe.data)) == []
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("unlabeled.txt", "val.txt"):
        (bad / name).write_text((voc_splits / name).read_text())
    wrong_size = tmp_path / "small.png"
    Image.fromarray(np.zeros((5, 5), np.uint8), mode="L").save(wrong_size)
    (bad / "labeled.txt").write_text(f"JPEGImages/nope.jpg SegmentationClass/nope.png\nJPEGImages/2007_000000.jpg {wrong_size}\n")
    problems = check_natural_splits(resolve_natural_splits(recipe.data.model_copy(update={"splits": bad})))
    assert problems[0].startswith(f"{voc}/JPEGImages/nope.jpg: image not found (labeled split, {bad}/labeled.txt:1)")
    assert problems[1] == f"{wrong_size}: mask is 5x5 but its image 2007_000000.jpg is 52x40"
    with pytest.raises(UserError, match="data.splits: not set"):
        resolve_natural_splits(recipe.data.model_copy(update={"splits": None}))


def test_masks_palette_and_cityscapes_label_ids(voc, cityscapes, tmp_path):
    palette_png = voc / "SegmentationClass" / "2007_000000.png"
    assert Image.open(palette_png).mode == "P"
    mask = read_mask(palette_png, 21)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= set(range(21)) | {255} and 255 in mask
    # bremen has only *_labelIds.png: a split naming labelTrainIds reads them mapped to trainIds
    gt = cityscapes / "gtFine/train/bremen"
    train_ids = read_mask(gt / "bremen_000000_000019_gtFine_labelTrainIds.png", 19)
    label_ids = np.array(Image.open(gt / "bremen_000000_000019_gtFine_labelIds.png"))
    assert np.array_equal(train_ids, LABEL_IDS_TO_TRAIN_IDS[label_ids])
    # an SBD-only image named under SegmentationClass/ (UniMatch's lists) reads SegmentationClassAug/
    aug_only = read_mask(voc / "SegmentationClass" / "2008_000001.png", 21)
    assert np.array_equal(aug_only, np.array(Image.open(voc / "SegmentationClassAug" / "2008_000001.png")))
    assert LABEL_IDS_TO_TRAIN_IDS[7] == 0 and LABEL_IDS_TO_TRAIN_IDS[33] == 18 and LABEL_IDS_TO_TRAIN_IDS[0] == 255
    bad = tmp_path / "bad.png"
    Image.fromarray(np.full((4, 4), 30, np.uint8), mode="L").save(bad)
    with pytest.raises(UserError, match=r"bad.png: mask value 30 outside 0..20 and not 255"):
        read_mask(bad, 21)


def test_manifest_is_reproducible_and_disjoint(voc, cityscapes, tmp_path):
    code, out, err = cli("manifest", "voc", "--root", voc, "--labeled", "3", "--seed", "1", "--out", tmp_path / "a")
    assert code == 0, err and "3 labeled, 7 unlabeled, 2 validation" in out
    cli("manifest", "voc", "--root", voc, "--labeled", "3", "--seed", "1", "--out", tmp_path / "b")
    for name in ("labeled.txt", "unlabeled.txt", "val.txt"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    labeled = (tmp_path / "a/labeled.txt").read_text().splitlines()
    unlabeled = (tmp_path / "a/unlabeled.txt").read_text().splitlines()
    # a count is drawn from the fine set (classic protocol); the rest of the augmented pool is unlabeled
    assert all(line.startswith("JPEGImages/2007_") and " SegmentationClass/" in line for line in labeled)
    assert not {line.split()[0] for line in labeled} & {line.split()[0] for line in unlabeled}
    assert any("SegmentationClassAug/2008_" in line for line in unlabeled)
    assert (tmp_path / "a/val.txt").read_text().splitlines()[0] == "JPEGImages/2009_000000.jpg SegmentationClass/2009_000000.png"

    code, out, err = cli("manifest", "cityscapes", "--root", cityscapes, "--labeled", "1/3", "--out", tmp_path / "c")
    assert code == 0, err
    assert "2 labeled, 4 unlabeled, 3 validation" in out
    first = (tmp_path / "c/val.txt").read_text().splitlines()[0]
    assert first == ("leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png "
                     "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelTrainIds.png")
    code, _, err = cli("manifest", "voc", "--root", voc, "--labeled", "50", "--out", tmp_path / "d")
    assert code == 2 and err.strip() == "error: --labeled: 50 labeled images requested but the fine set has 6"


# --------------------------------------------------------------------------------------------- model


@pytest.mark.parametrize("backbone", ["resnet50", "resnet101"])
def test_deeplabv3plus_shapes(backbone, r50):
    from maskmatch_med.networks.deeplabv3plus import DeepLabV3Plus

    model = (r50 if backbone == "resnet50" else DeepLabV3Plus(num_classes=5, backbone=backbone)).eval()
    assert len(model.backbone.layer3) == {"resnet50": 6, "resnet101": 23}[backbone]
    taps = {}
    hooks = [model.high_level.register_forward_hook(lambda m, i, out: taps.update(c4=out.shape)),
             model.low_level.register_forward_hook(lambda m, i, out: taps.update(c1=out.shape))]
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 48))
    for hook in hooks:
        hook.remove()
    assert out.shape == (2, 5, 64, 48)
    shapes = dict(taps)
    assert shapes["c4"] == (2, 2048, 4, 3)  # output stride 16 (layer4 dilated, not strided)
    assert shapes["c1"] == (2, 256, 16, 12)
    if backbone == "resnet50":  # odd sizes, as crop 321 (the same code path for both depths)
        with torch.no_grad():
            assert model(torch.randn(1, 3, 33, 35)).shape == (1, 5, 33, 35)
    dilations = [block.conv2.dilation for block in model.backbone.layer4]
    assert dilations == [(1, 1)] + [(2, 2)] * (len(dilations) - 1)
    assert [branch[0].dilation for branch in model.aspp.branches[1:4]] == [(6, 6), (12, 12), (18, 18)]


def test_pretrained_torchvision_state_dict(tmp_path, capsys, r50):
    from maskmatch_med.config import ModelConfig
    from maskmatch_med.models import build_model
    from maskmatch_med.networks.deeplabv3plus import load_pretrained

    source = r50
    # torchvision's file: the same names, plus the ImageNet classifier, minus the BN step counters
    state = {k: v for k, v in source.backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)
    state["layer9.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "resnet50.pth")
    model = build_model(ModelConfig(name="deeplabv3plus", backbone="resnet50", pretrained=tmp_path / "resnet50.pth"), 2, 3, 3)
    report = capsys.readouterr().out
    assert "no missing keys; unexpected keys (1): layer9.extra" in report
    for key, value in source.backbone.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(model.backbone.state_dict()[key], value), key
    partial = {k: v for k, v in state.items() if k != "layer4.2.bn3.bias"}
    torch.save({"state_dict": {f"module.{k}": v for k, v in partial.items()}}, tmp_path / "wrapped.pth")
    assert load_pretrained(r50, tmp_path / "wrapped.pth")[0] == ["layer4.2.bn3.bias"]

    wrong = dict(state, **{"conv1.weight": torch.zeros(64, 1, 7, 7)})  # a 1-channel stem
    torch.save(wrong, tmp_path / "gray.pth")
    with pytest.raises(UserError, match=r"model.pretrained: .*gray.pth: 1 tensors have the wrong shape .*conv1.weight"):
        load_pretrained(r50, tmp_path / "gray.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match=r"model.pretrained: .*junk.pth: not a checkpoint: it is a text file$"):
        load_pretrained(r50, tmp_path / "junk.pth")
    torch.save({"conv1.weight": object()}, tmp_path / "pickled.pth")  # refused, without PyTorch's advice to load it unchecked
    with pytest.raises(UserError, match=r"model.pretrained: .*pickled.pth: refused: it holds pickled Python objects \(object\), which could run code") as refusal:
        load_pretrained(r50, tmp_path / "pickled.pth")
    assert "weights_only" not in str(refusal.value)
    torch.save({"head.weight": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(UserError, match=r"foreign.pth: no key matches a ResNet encoder"):
        load_pretrained(r50, tmp_path / "foreign.pth")


def test_head_lr_multiplier_and_perturbation_taps(r50):
    from maskmatch_med.config import load_recipe
    from maskmatch_med.engine.trainer import build_optimizer, poly_lr
    from maskmatch_med.method.perturbation import feature_taps, perturbed_encoder

    recipe = load_recipe(Path("recipes/voc.yaml"))
    model = r50
    groups = build_optimizer(recipe, model).param_groups
    assert [g["lr"] for g in groups] == [pytest.approx(0.001), pytest.approx(0.01)]
    assert sum(p.numel() for p in groups[0]["params"]) == sum(p.numel() for p in model.backbone.parameters())
    assert poly_lr(0.001, 0, 10, 0.9) * groups[1]["lr_mult"] == pytest.approx(0.01)
    assert [tap.module for tap in feature_taps(model)] == [model.low_level, model.high_level]
    model.eval()
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        clean = model(x)
        with perturbed_encoder(model, 0.5, torch.Generator().manual_seed(0)):
            perturbed = model(x)
        assert not torch.allclose(clean, perturbed) and torch.equal(clean, model(x))


# ----------------------------------------------------------------------------------- metrics, losses


def test_miou_hand_worked():
    from maskmatch_med.scenarios.photos.validation import confusion_matrix, miou_metrics

    target = np.array([[0, 0, 1, 1], [0, 0, 1, 255], [2, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 2, 2], [2, 2, 0, 0]])
    # class 0: TP 3, FP 1 (a 2 predicted 0), FN 1 -> 3/5; class 1: TP 2, FP 1, FN 1 -> 2/4;
    # class 2: TP 2, FP 1, FN 1 -> 2/4; class 3 never occurs -> no IoU; the 255 pixels are skipped
    cm = confusion_matrix(pred, target, 4)
    assert cm.sum() == 10
    metrics = miou_metrics(cm, ["bg", "a", "b", "c d"])
    assert metrics["iou_bg"] == pytest.approx(0.6) and metrics["iou_a"] == pytest.approx(0.5) and metrics["iou_b"] == pytest.approx(0.5)
    assert np.isnan(metrics["iou_c_d"])
    assert metrics["miou"] == pytest.approx((0.6 + 0.5 + 0.5) / 3)
    # summed over images before dividing, as UniMatch does
    two = confusion_matrix(pred, target, 4) + confusion_matrix(np.zeros((1, 2), int), np.array([[3, 3]]), 4)
    assert miou_metrics(two, ["bg", "a", "b", "c"])["iou_c"] == 0.0
    assert miou_metrics(two, ["bg", "a", "b", "c"])["iou_bg"] == pytest.approx(3 / 7)


def test_ohem_keeps_hard_pixels():
    from maskmatch_med.method.losses import ohem_loss

    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0, 0] = torch.tensor([4.0, 1.0, -1.0, 0.0])  # p(class 0) = sigmoid(x)
    target = torch.tensor([[[0, 0, 0, 255]]])
    p = torch.sigmoid(torch.tensor([4.0, 1.0, -1.0]))
    ce = -torch.log(p)
    # thresh 0.7: only the pixel with p = 0.27 is hard; min_kept 2 raises the threshold to the 2nd hardest
    assert ohem_loss(logits, target, thresh=0.7, min_kept=1).item() == pytest.approx(ce[2].item(), rel=1e-5)
    assert ohem_loss(logits, target, thresh=0.7, min_kept=2).item() == pytest.approx(ce[1:].mean().item(), rel=1e-5)
    # fewer labeled pixels than min_kept: plain CE over the labeled ones
    assert ohem_loss(logits, target, thresh=0.7, min_kept=10).item() == pytest.approx(ce.mean().item(), rel=1e-5)


def test_colour_augment_on_normalised_rgb():
    from maskmatch_med.scenarios.photos.data import denormalise, normalise
    from maskmatch_med.method.augment import colour_augment

    images = normalise(torch.randint(0, 256, (4, 3, 16, 16)).float())
    a = colour_augment(images, torch.Generator().manual_seed(3))
    assert a.shape == images.shape and a.dtype == images.dtype
    assert torch.equal(a, colour_augment(images, torch.Generator().manual_seed(3)))
    rgb = denormalise(a)
    assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5
    assert torch.allclose(colour_augment(images, jitter_prob=0, grayscale_prob=0, blur_prob=0), images, atol=1e-5)
    gray = denormalise(colour_augment(images, jitter_prob=0, grayscale_prob=1, blur_prob=0))
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-5) and torch.allclose(gray[:, 1], gray[:, 2], atol=1e-5)


def test_batches_crop_pad_with_ignore(voc, voc_splits):
    from maskmatch_med.data.natural import resolve_natural_splits as splits_of
    from maskmatch_med.config import load_recipe
    from maskmatch_med.scenarios.photos.data import NaturalImageSource

    recipe = load_recipe(Path("recipes/voc.yaml"), [f"data.root={voc}", f"data.splits={voc_splits}"])
    samples = splits_of(recipe.data)["labeled"]
    # a 0.5x rescale of a ~40x50 image is smaller than the 64 px crop: the rest is padding (255)
    source = NaturalImageSource(samples, True, crop=64, rescale_range=(0.5, 0.5), num_classes=21, device=torch.device("cpu"), threads=2)
    images, labels = source.batch(torch.tensor([0, 1]), torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 64, 64) and labels.shape == (2, 64, 64) and labels.dtype == torch.long
    # padding is at the bottom and right (left after a horizontal flip); 48x52 and 40x48 images keep 24x26, 20x24 px
    assert (labels[:, 24:, :] == 255).all() and int((labels[1] != 255).any(1).sum()) <= 20
    assert all(int((labels[i] != 255).any(0).sum()) <= 26 for i in range(2))
    black = -torch.tensor([0.485, 0.456, 0.406]) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(images[:, :, 63, 30], black.expand(2, 3))
    unlabeled = NaturalImageSource(samples, False, crop=64, rescale_range=(0.5, 0.5), num_classes=21, device=torch.device("cpu"))
    _, ignore = unlabeled.batch(torch.tensor([0]), torch.Generator().manual_seed(0))
    assert set(ignore.unique().tolist()) == {0, 255}


# --------------------------------------------------------------------------------------- end to end


def test_voc_recipe_trains_through_cli(voc_run):
    rows = list(csv.DictReader(open(voc_run / "train_log.csv")))
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert {"loss_x", "loss_s", "loss_m"} <= set(rows[0]) and all(np.isfinite(float(r["loss"])) for r in rows)
    assert float(rows[0]["lr"]) == pytest.approx(0.001)  # the encoder's lr; the head's is x10
    val = list(csv.DictReader(open(voc_run / "val_log.csv")))
    assert len(val) == 1 and 0.0 <= float(val[0]["miou"]) <= 1.0 and "iou_tvmonitor" in val[0]
    assert (voc_run / "checkpoints/best.pt").is_file()


def test_predict_writes_palette_pngs(voc_run, voc, tmp_path):
    inputs = tmp_path / "photos"
    inputs.mkdir()
    for name in ("2009_000000.jpg", "2007_000001.jpg"):
        (inputs / name).write_bytes((voc / "JPEGImages" / name).read_bytes())
    Image.open(voc / "JPEGImages/2007_000002.jpg").save(inputs / "frame.png")
    code, out, err = cli("predict", "--checkpoint", voc_run / "checkpoints/best.pt", "--input", inputs, "--output", tmp_path / "pred", "--device", "cpu")
    assert code == 0, err
    assert "wrote 3 label maps" in out
    for name in ("2009_000000", "2007_000001", "frame"):
        written = Image.open(tmp_path / "pred" / f"{name}.png")
        source = Image.open(next(inputs.glob(f"{name}.*")))
        assert written.mode == "P" and written.size == source.size
        assert written.getpalette()[:6] == voc_palette()[:6]
        assert np.array(written).max() < 21
    labels = json.loads((tmp_path / "pred/labels.json").read_text())
    assert labels["0"] == "background" and labels["20"] == "tvmonitor"
    code, _, err = cli("predict", "--checkpoint", voc_run / "checkpoints/best.pt", "--input", inputs, "--output", inputs, "--device", "cpu")
    assert code == 2 and "output directory is the directory of input" in err and err.count("\n") == 1



def test_photos_predict_at_several_scales_and_refuse_nifti_options(voc_run, voc, tmp_path, run_cli):
    """Issue 15: --scales and --largest-component for VOC/Cityscapes checkpoints too; what a photo
    cannot get (a NIfTI montage, probability or uncertainty maps) is one line naming the scenario."""
    from maskmatch_med.scenarios.base import TrainedModel
    from maskmatch_med.scenarios.registry import PHOTOS, scenario_for

    checkpoint = voc_run / "checkpoints/best.pt"
    assert scenario_for(TrainedModel.load(checkpoint, torch.device("cpu")).recipe) is PHOTOS
    inputs = tmp_path / "photos"
    inputs.mkdir()
    for name in ("2009_000000.jpg", "2007_000001.jpg"):
        (inputs / name).write_bytes((voc / "JPEGImages" / name).read_bytes())
    args = ("predict", "--checkpoint", checkpoint, "--input", inputs, "--device", "cpu")
    code, out, err = run_cli(*args, "--output", tmp_path / "pred", "--scales", "0.75,1.0,1.25", "--largest-component")
    assert code == 0, err
    assert "wrote 2 label maps" in out
    for name in ("2009_000000", "2007_000001"):
        written = Image.open(tmp_path / "pred" / f"{name}.png")
        assert written.mode == "P" and written.size == Image.open(inputs / f"{name}.jpg").size
        labels = np.array(written)
        for cls in np.unique(labels)[1:]:  # one connected region per class
            assert ndimage.label(labels == cls)[1] == 1
    for options, named in ((["--png"], "--png"), (["--probabilities", "--uncertainty"], "--probabilities, --uncertainty")):
        code, _, err = run_cli(*args, "--output", tmp_path / "refused", *options)
        assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
        assert err.startswith(f"error: {named}: not available in the photos scenario (VOC / Cityscapes photos)")
        assert not (tmp_path / "refused").exists()

def test_predict_reads_every_image_before_writing_any(voc_run, voc, tmp_path, run_cli):
    """Good photos followed by a truncated one: refused before the first palette PNG is written."""
    inputs = tmp_path / "photos"
    inputs.mkdir()
    good = (voc / "JPEGImages" / "2007_000001.jpg").read_bytes()
    (inputs / "a.jpg").write_bytes(good)
    (inputs / "b.jpg").write_bytes(good[: len(good) // 2])
    (inputs / "c.png").write_text("not a picture")
    code, _, err = run_cli("predict", "--checkpoint", voc_run / "checkpoints/best.pt", "--input", inputs,
                           "--output", tmp_path / "pred", "--device", "cpu")
    assert code == 2 and "Traceback" not in err
    assert err.splitlines() == [f"error: {inputs / 'b.jpg'}: not a readable image (OSError)",
                                f"error: {inputs / 'c.png'}: not a readable image (UnidentifiedImageError)",
                                "error: 2 of 3 inputs cannot be read; nothing was written"]
    assert not (tmp_path / "pred").exists()


def test_cityscapes_recipe_trains_through_cli(cityscapes, tmp_path):
    """UniMatch base (feature perturbation on DeepLabV3+), OHEM, epochs -> iterations, labelIds
    fallback (bremen), sliding-window validation, then predict with Cityscapes colours."""
    cli("manifest", "cityscapes", "--root", cityscapes, "--labeled", "1/3", "--out", tmp_path / "splits")
    run = tmp_path / "run"
    code, out, err = cli("train", "recipes/cityscapes.yaml", "--set", f"data.root={cityscapes}", "--set", f"data.splits={tmp_path / 'splits'}",
                         "--set", "train.epochs=1", "--set", "method.name=unimatch", "--set", "method.ohem_min_kept=100",
                         "--set", "data.eval_window=48", *[a for s in TINY for a in ("--set", s)], "--output", run, "--no-progress")
    assert code == 0, err
    assert "unimatch: 2 labeled / 4 unlabeled images, 3 validation cases" in out
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    assert len(rows) == 2  # 1 epoch = 4 unlabeled images // 2 per batch
    assert {"loss_fp", "loss_s1", "loss_s2"} <= set(rows[0])
    assert float(rows[0]["valid_frac"]) < 1.0  # conf_thresh 0: only crop padding is excluded
    val = list(csv.DictReader(open(run / "val_log.csv")))
    assert "iou_road" in val[0] and "iou_background" not in val[0]
    photo = tmp_path / "in"
    photo.mkdir()
    (photo / "x.png").write_bytes(next((cityscapes / "leftImg8bit/val/frankfurt").glob("*.png")).read_bytes())
    code, _, err = cli("predict", "--checkpoint", run / "checkpoints/last.pt", "--input", photo, "--output", tmp_path / "pred", "--device", "cpu")
    assert code == 0, err
    written = Image.open(tmp_path / "pred/x.png")
    assert written.size == (96, 48) and written.getpalette()[:3] == [128, 64, 128]


def test_bad_input_is_one_line(voc, voc_splits, tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    code, _, err = cli("train", "recipes/voc.yaml", "--set", f"data.root={voc}", "--set", f"data.splits={voc_splits}",
                       "--set", f"model.pretrained={tmp_path / 'bad.pth'}", *[a for s in TINY for a in ("--set", s)], "--output", tmp_path / "r")
    assert code == 2 and err.startswith(f"error: model.pretrained: {tmp_path / 'bad.pth'}: not a checkpoint: it is a text file") and err.count("\n") == 1
    code, _, err = cli("train", "recipes/voc.yaml", "--set", f"data.root={voc}", "--set", f"data.splits={tmp_path}", "--output", tmp_path / "r")
    assert code == 2 and err == f"error: {tmp_path / 'labeled.txt'}: split file not found\n"
    code, _, err = cli("check-data", "recipes/voc.yaml", "--set", f"data.root={voc}")  # the recipe's default splits
    assert code == 2 and err.startswith("error: data.splits: data_manifests/voc/92 is not a directory") and err.count("\n") == 1
    code, out, err = cli("check-data", "recipes/voc.yaml", "--set", f"data.root={voc}", "--set", f"data.splits={voc_splits}")
    assert code == 0, err
    assert "labeled 2, unlabeled 8, validation 2" in out
