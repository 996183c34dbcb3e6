"""The recipe schema: typed, validated, with defaults; YAML loading and `--set KEY=VALUE` overrides.

A recipe is a YAML file whose keys mirror the classes below (`method.mask.ratio`, `train.iterations`,
...). Unknown keys and wrong types are errors that name the dotted key. Relative paths are resolved
against the current working directory, as the CLI's own path arguments are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from maskmatch_med.errors import UserError

Scale = Union[float, list[float]]


def _at_least_one(value: int | str) -> int | str:
    if isinstance(value, int) and value < 1:
        raise ValueError("must be >= 1 or 'all'")
    return value


NumLabeled = Annotated[Union[int, Literal["all"]], AfterValidator(_at_least_one)]


class Section(BaseModel):
    """Base for every recipe section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DomainSourceConfig(Section):
    """One source of a domain-adaptation recipe (`data.labeled` or `data.unlabeled`): a layout and where
    it lives, and the domain its cases belong to (M&Ms: each case's vendor unless `domain` is set)."""

    layout: Literal["acdc", "datalist", "mnms"] = "acdc"
    root: Path | None = Field(None, description="dataset root (layouts acdc and mnms)")
    datalist: Path | None = Field(None, description="MONAI datalist JSON (layout datalist)")
    manifest: Path | None = Field(None, description="acdc: dir with val.txt, test.txt (and labeled_order.txt for data.labeled)")
    num_labeled: NumLabeled = Field("all", description="data.labeled only: acdc: first N of labeled_order.txt; datalist: first N labeled training entries")
    csv: Path | None = Field(None, description="mnms: the dataset information CSV (External code, Vendor, Centre, ED, ES)")
    vendors: list[str] | None = Field(None, description="mnms: keep only these vendors (default: all)")
    domain: str | None = Field(None, description="domain name of these cases (default: source / target; mnms: the vendor)")

    @field_validator("domain")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "/" in value or "," in value):
            raise ValueError("a domain name must be non-empty, without '/' or ','")
        return value

    @model_validator(mode="after")
    def _where(self) -> DomainSourceConfig:
        if self.layout in ("acdc", "mnms") and self.root is None:
            raise ValueError(f"root is required for layout '{self.layout}'")
        if self.layout == "acdc" and self.manifest is None:
            raise ValueError("manifest is required for layout 'acdc'")
        if self.layout == "datalist" and self.datalist is None:
            raise ValueError("datalist is required for layout 'datalist'")
        if self.layout == "mnms" and self.csv is None:
            raise ValueError("csv is required for layout 'mnms' (the dataset information CSV with vendor, ED and ES)")
        return self


class DataConfig(Section):
    layout: Literal["acdc", "datalist", "voc", "cityscapes"] = "acdc"
    root: Path | None = Field(None, description="dataset root (layouts acdc, voc, cityscapes)")
    # Natural images (layouts voc, cityscapes); the medical layouts ignore these.
    splits: Path | None = Field(None, description="dir with UniMatch-format labeled.txt, unlabeled.txt, val.txt")
    crop_size: int = Field(321, ge=16, description="training crop edge (natural images)")
    rescale_range: tuple[float, float] = Field((0.5, 2.0), description="random rescale of natural images before the crop")
    eval_mode: Literal["full", "sliding"] = Field("full", description="natural-image validation: whole image or sliding window")
    eval_window: int | None = Field(None, ge=16, description="sliding-window edge (default: crop_size); stride is 2/3 of it")
    datalist: Path | None = Field(None, description="MONAI datalist JSON (layout datalist)")
    manifest: Path = Field(Path("data_manifests/acdc"), description="dir with val.txt, test.txt, labeled_order.txt")
    num_labeled: NumLabeled = Field(
        3, description="acdc: labeled training patients, first N of labeled_order.txt; datalist: first N labeled training entries (default all)"
    )
    val_count: int = Field(0, ge=0, description="datalist without a validation section: hold out this many labeled training cases for validation")
    val_seed: int = Field(0, description="seed of the data.val_count draw (independent of train.seed: runs with other seeds validate on the same cases)")
    num_classes: int = Field(4, ge=2)
    class_names: list[str] = Field(default_factory=lambda: ["RV", "Myo", "LV"], description="foreground classes 1..C-1")
    input_size: tuple[int, int] = Field((256, 256), description="slices are resized to this size for the 2D network")
    # Domain adaptation: labeled and unlabeled cases from different sources (data/domains.py);
    # when set, they replace layout/root/datalist/manifest/num_labeled.
    labeled: DomainSourceConfig | None = Field(None, description="source domain: labeled training, validation and test cases")
    unlabeled: DomainSourceConfig | None = Field(None, description="target domain: unlabeled training, validation and test cases")

    @field_validator("rescale_range")
    @classmethod
    def _rescale(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("must be 0 < low <= high")
        return value

    @model_validator(mode="before")
    @classmethod
    def _datalist_default_labeled(cls, raw: Any) -> Any:
        """A datalist's labels are all used unless the recipe says otherwise: the default of 3 is the
        ACDC protocol's, and would silently drop labeled cases of a user's own file."""
        if isinstance(raw, dict) and raw.get("layout") == "datalist" and "num_labeled" not in raw:
            return {**raw, "num_labeled": "all"}
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        if self.layout == "cityscapes":  # no background class: every class index is named
            if len(self.class_names) != self.num_classes:
                raise ValueError(f"class_names lists {len(self.class_names)} names but num_classes={self.num_classes} (layout cityscapes names every class)")
        elif len(self.class_names) != self.num_classes - 1:
            raise ValueError(
                f"class_names lists {len(self.class_names)} names but num_classes={self.num_classes} "
                f"needs {self.num_classes - 1} (background is implicit)"
            )
        if any(s < 16 for s in self.input_size):
            raise ValueError("input_size must be at least 16x16")
        if (self.labeled is None) != (self.unlabeled is None):
            raise ValueError("domain adaptation needs both data.labeled and data.unlabeled")
        if self.val_count and (self.layout != "datalist" or self.labeled is not None):
            raise ValueError("val_count holds out cases of a datalist (layout datalist, without data.labeled / data.unlabeled)")
        return self

    @property
    def domain_adaptation(self) -> bool:
        return self.labeled is not None


class ModelConfig(Section):
    name: Literal["unet", "basicunet", "dynunet", "deeplabv3plus"] = "unet"
    backbone: Literal["resnet50", "resnet101"] = Field("resnet101", description="DeepLabV3+ encoder")
    pretrained: Path | None = Field(None, description="ImageNet ResNet state dict (torchvision key names) for the DeepLabV3+ encoder")
    channels: list[int] = Field(default_factory=lambda: [16, 32, 64, 128, 256])
    strides: list[int] = Field(default_factory=lambda: [2, 2, 2, 2])
    num_res_units: int = Field(2, ge=0)
    norm: Literal["batch", "instance"] = "batch"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    spatial_dims: Literal[2, 3] = Field(2, description="2: slices of volumes; 3: patches of volumes (recipe section volume)")
    axis_strides: list[list[int]] | None = Field(
        None, description="3D only: per-level, per-axis strides, e.g. [[2,2,1],[2,2,1],[2,2,2]] for thick slices (default: model.strides on every axis)"
    )

    @model_validator(mode="after")
    def _depth(self) -> ModelConfig:
        if len(self.strides) != len(self.channels) - 1:
            raise ValueError(f"strides needs len(channels)-1 = {len(self.channels) - 1} entries")
        if self.axis_strides is not None:
            if self.spatial_dims != 3:
                raise ValueError("axis_strides is for 3D networks (model.spatial_dims: 3)")
            if len(self.axis_strides) != len(self.strides) or any(len(level) != 3 or min(level) < 1 for level in self.axis_strides):
                raise ValueError(f"axis_strides needs {len(self.strides)} levels of 3 strides >= 1 each")
        if self.name == "dynunet" and self.spatial_dims != 3:
            raise ValueError("dynunet is a 3D network here: set model.spatial_dims: 3")
        if self.name == "deeplabv3plus" and self.spatial_dims != 2:
            raise ValueError("deeplabv3plus is a 2D network: model.spatial_dims must be 2")
        return self


class EnsembleConfig(Section):
    scales: list[Scale] = Field(default_factory=lambda: [0.75, 1.0, 1.25])
    fuse: Literal["mean", "max", "vote", "agree"] = Field(
        "vote",
        description="mean / max of the scales' probabilities; vote: the mean's label, valid where min_votes scales confidently give it; "
        "agree: each scale's own confident label, valid where min_votes scales are confident and none of them disagrees",
    )
    min_votes: int = Field(
        1, ge=1, description="vote / agree: scales that must be confident in the pixel's label (1: any scale)"
    )
    background_votes: int | Literal["all", "same"] = Field(
        "same", description="vote / agree: scales that must be confident where the label is background (class 0); same: min_votes"
    )

    def background_votes_of(self, scales: int) -> int | None:
        """background_votes as a count for this many scales (None: the same as min_votes)."""
        if self.background_votes == "same":
            return None
        return scales if self.background_votes == "all" else int(self.background_votes)

    @field_validator("scales")
    @classmethod
    def _positive(cls, scales: list[Scale]) -> list[Scale]:
        if not scales:
            raise ValueError("needs at least one scale")
        flat = [s for scale in scales for s in (scale if isinstance(scale, list) else [scale])]
        if any(s <= 0 for s in flat):
            raise ValueError("scales must be > 0")
        return scales

    @model_validator(mode="after")
    def _votes(self) -> EnsembleConfig:
        if self.min_votes > len(self.scales):
            raise ValueError(f"min_votes {self.min_votes} exceeds the {len(self.scales)} scale(s)")
        if isinstance(self.background_votes, int) and not 1 <= self.background_votes <= len(self.scales):
            raise ValueError(f"background_votes {self.background_votes} must be in 1..{len(self.scales)} (the scales), or all / same")
        return self


class MaskConfig(Section):
    ratio: float = Field(0.7, ge=0.0, le=1.0, description="probability of dropping each patch")
    patch_size: int | list[int] = Field(16, description="patch edge in pixels, or one per spatial axis")
    view: Literal["strong", "weak"] = "strong"
    fill: float = Field(0.0, description="value of dropped patches (0 = the normalised mean)")
    norm_statistics: Literal["shared", "apart"] = Field(
        "shared",
        description="shared: the masked view joins the other views' forward pass and BatchNorm statistics; apart: its own pass, which leaves the running statistics (what validation, the teacher and predict use) to the unmasked views",
    )

    @field_validator("patch_size")
    @classmethod
    def _positive(cls, value: int | list[int]) -> int | list[int]:
        if any(v < 1 for v in (value if isinstance(value, list) else [value])):
            raise ValueError("patch sizes must be >= 1")
        return value


class StrongAugConfig(Section):
    brightness: float = 0.2
    contrast: tuple[float, float] = (0.7, 1.3)
    gamma: tuple[float, float] = (0.7, 1.5)
    blur_prob: float = Field(0.5, ge=0.0, le=1.0)
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise_std: float = Field(0.1, ge=0.0)
    apply_prob: float = Field(0.8, ge=0.0, le=1.0)
    cutmix_prob: float = Field(0.5, ge=0.0, le=1.0)
    # `medical` perturbs z-scored intensities; `natural` is UniMatch's colour pipeline on ImageNet-normalised RGB.
    kind: Literal["medical", "natural"] = "medical"
    jitter: tuple[float, float, float, float] = Field((0.5, 0.5, 0.5, 0.25), description="natural: brightness, contrast, saturation, hue")
    grayscale_prob: float = Field(0.2, ge=0.0, le=1.0, description="natural: probability of converting to grayscale")


class WeakAugConfig(Section):
    rotate_deg: float = Field(20.0, ge=0.0)
    # Wide enough to cover the ensemble scales: the teacher must be competent at every scale it fuses.
    scale_range: tuple[float, float] = (0.7, 1.4)
    flip_prob: float = Field(0.5, ge=0.0, le=1.0)


class PseudoLabelConfig(Section):
    """Which teacher pixels teach the student, and how much (method/pseudo_labels.py)."""

    threshold: Literal["fixed", "classwise"] = Field(
        "classwise", description="fixed: conf_thresh for every class; classwise: conf_thresh scaled by each class's EMA confidence (FlexMatch)"
    )
    class_momentum: float = Field(0.99, ge=0.0, lt=1.0, description="classwise and align: EMA momentum of the per-class running means")
    align: Literal["none", "labeled"] = Field(
        "none", description="labeled: scale the teacher's class probabilities towards the labeled ground truth's class frequencies (ReMixMatch distribution alignment)"
    )
    weighting: Literal["threshold", "quality"] = Field(
        "threshold", description="threshold: valid pixels only; quality: every pixel, weighted by its image's share of confident pixels (MIC/DAFormer)"
    )
    balance: Literal["none", "class"] = Field(
        "none", description="class: each pseudo-label class contributes equally to the unsupervised loss (instead of by its pixel count)"
    )
    foreground_islands: Literal["keep", "ignore"] = Field(
        "keep",
        description="ignore: foreground pseudo-labels outside each image's largest connected foreground region leave the loss "
        "(anatomy that is one connected object, such as the heart: the islands are a teacher's far-off false positives); "
        "keep for images with several separate objects (natural images, multi-organ scans)",
    )
    background_threshold: float | None = Field(
        None, ge=0.0, le=1.0,
        description="confidence a background (class 0) pseudo-label needs, above the foreground classes' bar: a young teacher's "
        "confident background holds much of the true small-class foreground; null: the same rule as every class",
    )


class MethodConfig(Section):
    name: Literal["supervised", "fixmatch", "unimatch", "maskmatch"] = "maskmatch"
    base: Literal["fixmatch", "unimatch"] = Field("fixmatch", description="the framework MaskMatch is plugged into")
    fp_dropout: float = Field(0.5, ge=0.0, lt=1.0, description="UniMatch feature perturbation: channel dropout on encoder features")
    supervised_loss: Literal["ce", "ce_dice", "ohem"] = "ce_dice"
    ohem_thresh: float = Field(0.7, gt=0.0, le=1.0, description="OHEM: pixels whose true-class probability is below this are hard")
    ohem_min_kept: int = Field(200000, ge=1, description="OHEM: keep at least this many hardest pixels per batch")
    unsupervised_loss: Literal["ce", "dice", "ce_dice"] = Field(
        "ce", description="loss against pseudo-labels: ce (FixMatch/UniMatch natural images), dice (UniMatch's medical recipe) or ce_dice, their mean (BCP, and the supervised loss)"
    )
    conf_thresh: float = Field(0.95, ge=0.0, le=1.0)
    lambda_u: float = Field(1.0, ge=0.0, description="weight of the consistency loss L_s")
    lambda_m: float = Field(1.0, ge=0.0, description="weight of the masked-modeling loss L_m")
    teacher: Literal["ema", "shared"] = "ema"
    ema_momentum: float = Field(0.99, ge=0.0, le=1.0)
    warmup_iterations: int = Field(0, ge=0, description="supervised-only iterations first; the EMA teacher then restarts from the student")
    rampup_iterations: int = Field(0, ge=0, description="sigmoid ramp of lambda_u and lambda_m over this many iterations after the warm-up")
    mix: Literal["cutmix", "bcp"] = Field(
        "cutmix", description="cutmix: between unlabeled images; bcp: bidirectional copy-paste between labeled and unlabeled images"
    )
    bcp_box: float = Field(2 / 3, gt=0.0, le=1.0, description="bcp: box side as a fraction of each spatial axis (BCP: 2/3)")
    bcp_outward: bool = Field(
        True, description="bcp: also paste unlabeled content into the labeled view (BCP's outward direction); false keeps the supervised view whole"
    )
    domain_norm: Literal["shared", "separate"] = Field(
        "shared",
        description="domain adaptation: separate gives the labeled source view its own BatchNorm statistics; the model's own (saved, used by predict) are the target's",
    )
    recalibrate_norm: int = Field(
        0,
        ge=0,
        description="before each validation and in the saved inference weights, re-estimate the evaluated network's BatchNorm statistics on this many clean unlabeled batches (the target's, in domain adaptation; AdaBN); 0: off",
    )
    pseudo_label: PseudoLabelConfig = Field(default_factory=PseudoLabelConfig)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    mask: MaskConfig = Field(default_factory=MaskConfig)
    strong_aug: StrongAugConfig = Field(default_factory=StrongAugConfig)


class TrainConfig(Section):
    iterations: int = Field(30000, ge=1)
    batch_size: int = Field(12, ge=1, description="labeled slices per step")
    unlabeled_batch_size: int | None = Field(None, ge=2, description="unlabeled slices per step (default: batch_size)")
    val_every: int = Field(500, ge=1)
    checkpoint_every: int | None = Field(None, ge=1, description="write `last` every N iterations (default: val_every)")
    log_every: int = Field(10, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    poly_power: float = Field(0.9, ge=0.0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_model: Literal["auto", "student", "teacher"] = Field(
        "auto", description="network validated and saved for inference; auto = the EMA teacher when there is one"
    )
    keep_last: int = Field(0, ge=0, description="also keep the K most recent iter_NNNNNNN.pt checkpoints")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="mixed precision on CUDA (ignored on CPU)")
    sync_bn: bool = Field(False, description="SyncBatchNorm across ranks under torchrun")
    deterministic: bool = Field(False, description="deterministic kernels (torch.use_deterministic_algorithms)")
    weak_aug: WeakAugConfig = Field(default_factory=WeakAugConfig)
    epochs: int | None = Field(None, ge=1, description="if set, iterations = epochs x batches per epoch of the unlabeled set")
    head_lr_mult: float = Field(1.0, gt=0.0, description="lr multiplier of the parameters outside a pretrained encoder")
    channels_last: bool = Field(False, description="channels-last memory format on CUDA (ignored on CPU)")

    # Whether unlabeled_batch_size came from batch_size: recipe.yaml then records it unset, so that a
    # resumed run given --set train.batch_size derives it again instead of keeping the old value.
    _derived_unlabeled_batch: bool = PrivateAttr(False)

    @model_validator(mode="after")
    def _unlabeled_batch(self) -> TrainConfig:
        if self.unlabeled_batch_size is None:
            self.unlabeled_batch_size = max(2, self.batch_size)
            self._derived_unlabeled_batch = True
        return self

    def as_recipe_values(self) -> dict:
        """The section as recipe.yaml records it: derived values left unset."""
        values = self.model_dump(mode="json")
        if self._derived_unlabeled_batch:
            values["unlabeled_batch_size"] = None
        return values


class VolumeConfig(Section):
    """3D training and inference (model.spatial_dims: 3). Volumes keep their stored voxel order with
    the coarsest-spacing axis moved last, so per-axis values read (in-plane, in-plane, slice)."""

    spacing: list[float] | None = Field(None, description="target voxel spacing in mm, e.g. [1.5, 1.5, 10.0]; null keeps each volume's own")
    patch_size: list[int] = Field(default_factory=lambda: [96, 96, 16], description="training patch = sliding-window size, voxels")
    pos: float = Field(1.0, ge=0.0, description="labeled patches centred on foreground, relative weight (RandCropByPosNegLabel)")
    neg: float = Field(1.0, ge=0.0, description="labeled patches centred on background, relative weight")
    intensity: Literal["percentile", "zscore", "ct_window"] = Field(
        "percentile", description="percentile: clip to `percentiles` then z-score (MR); zscore; ct_window: `ct_window` HU -> [-1, 1]"
    )
    percentiles: tuple[float, float] = (0.5, 99.5)
    ct_window: tuple[float, float] = (-175.0, 250.0)
    sw_overlap: float = Field(0.5, ge=0.0, lt=1.0, description="sliding-window overlap")
    sw_mode: Literal["gaussian", "constant"] = Field("gaussian", description="sliding-window blending")
    sw_batch_size: int = Field(2, ge=1, description="windows per network call")
    scale_slice_axis: bool = Field(False, description="predict --scales S also scales the slice axis (default: in-plane only)")

    @model_validator(mode="after")
    def _shapes(self) -> VolumeConfig:
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise ValueError("spacing needs 3 values > 0 (mm)")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError("patch_size needs 3 sizes >= 1")
        if self.pos + self.neg <= 0:
            raise ValueError("pos + neg must be > 0")
        if not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise ValueError("percentiles must satisfy 0 <= low < high <= 100")
        if self.ct_window[0] >= self.ct_window[1]:
            raise ValueError("ct_window must be [low, high] with low < high")
        return self


class Recipe(Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    volume: VolumeConfig = Field(default_factory=VolumeConfig)
    output_dir: Path = Path("runs/maskmatch")

    @model_validator(mode="after")
    def _data_source(self) -> Recipe:
        if self.data.layout in ("voc", "cityscapes") and self.model.spatial_dims != 2:
            raise ValueError(f"model.spatial_dims: layout '{self.data.layout}' holds 2D photos; use 2")
        if self.method.recalibrate_norm and self.method.domain_norm == "separate":
            raise ValueError("method.recalibrate_norm: cannot be combined with method.domain_norm 'separate' (the target statistics would be replaced); use one of them")
        if self.method.domain_norm == "separate" and not self.data.domain_adaptation:
            raise ValueError("method.domain_norm: 'separate' needs domain adaptation data (data.labeled and data.unlabeled with their domains)")
        if self.method.domain_norm == "separate" and self.method.name == "supervised":
            raise ValueError("method.domain_norm: 'separate' needs the unlabeled target images, which 'supervised' does not load")
        if self.data.domain_adaptation:
            return self  # the sources carry their own locations
        if self.data.layout == "acdc" and self.data.root is None:
            raise ValueError("data.root is required for layout 'acdc'")
        if self.data.layout == "datalist" and self.data.datalist is None:
            raise ValueError("data.datalist is required for layout 'datalist'")
        if self.data.layout in ("voc", "cityscapes") and self.data.root is None:
            raise ValueError(f"data.root is required for layout '{self.data.layout}'")
        return self

    def to_yaml(self) -> str:
        """The resolved recipe (recipe.yaml, checkpoints); values derived from other keys stay unset."""
        values = self.model_dump(mode="json")
        values["train"] = self.train.as_recipe_values()
        return yaml.safe_dump(values, sort_keys=False)


def _format_error(source: str, error: ValidationError) -> str:
    """One line naming the dotted key of the first problem pydantic found."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return f"{source}: {key}: {message}" if key else f"{source}: {message}"


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML, so 0.5, [1, 2] and true work)."""
    if "=" not in text:
        raise UserError(f"--set {text}: expected KEY=VALUE, e.g. --set train.iterations=1000")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise UserError(f"--set {text}: malformed key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_override(raw: dict, parts: list[str], value: Any, text: str) -> None:
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {text}: {'.'.join(parts[: depth + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def recipe_from_dict(raw: dict, source: str) -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as error:
        raise UserError(_format_error(source, error)) from None


def _dotted_keys(parts: list[str], value: Any) -> list[str]:
    """Every dotted key an override sets: `train={iterations: 2}` sets `train.iterations` too."""
    key = ".".join(parts)
    if not isinstance(value, dict):
        return [key]
    return [key, *(k for name, child in value.items() for k in _dotted_keys([*parts, str(name)], child))]


def _section(raw: dict, name: str) -> dict:
    value = raw.get(name)
    return value if isinstance(value, dict) else {}


def _iterations_over_epochs(raw: dict, given: dict[str, str]) -> None:
    """`train.epochs` replaces `train.iterations` (trainer.py), so `--set train.iterations=N` on a recipe
    that sets epochs (recipes/voc.yaml) would be ignored: the explicit budget wins and epochs is
    dropped. Both given on the command line is refused, since either could be meant."""
    train = _section(raw, "train")
    if "train.iterations" not in given or train.get("epochs") is None:
        return
    if "train.epochs" in given:
        raise UserError(
            f"--set {given['train.iterations']} and --set {given['train.epochs']} conflict: train.epochs sets "
            "train.iterations (epochs x batches per epoch); give only one of them"
        )
    train["epochs"] = None


# Keys of a single-source recipe that a domain-adaptation recipe's data.labeled / data.unlabeled replace.
SINGLE_SOURCE_KEYS = {
    "layout": "data.labeled.layout or data.unlabeled.layout",
    "root": "data.labeled.root or data.unlabeled.root",
    "datalist": "data.labeled.datalist or data.unlabeled.datalist",
    "manifest": "data.labeled.manifest or data.unlabeled.manifest",
    "num_labeled": "data.labeled.num_labeled",
}


def _single_source_keys_under_adaptation(raw: dict, given: dict[str, str]) -> None:
    """A domain-adaptation recipe reads its cases from data.labeled and data.unlabeled only, so an
    override of data.root (or layout, datalist, manifest, num_labeled) would change nothing: refused,
    naming the key that does what was meant."""
    data = _section(raw, "data")
    if data.get("labeled") is None and data.get("unlabeled") is None:
        return
    for key, instead in SINGLE_SOURCE_KEYS.items():
        if f"data.{key}" in given:
            raise UserError(
                f"--set {given[f'data.{key}']}: this domain-adaptation recipe takes its cases from data.labeled and "
                f"data.unlabeled, which replace data.{key}; set {instead} instead"
            )


def _split_keys_of_natural_layouts(raw: dict, given: dict[str, str]) -> None:
    """VOC and Cityscapes take their labeled images from data.splits (labeled.txt), so an override of
    data.num_labeled or data.manifest would be ignored: refused, with the command that draws a split."""
    data = _section(raw, "data")
    layout = data.get("layout")
    if layout not in ("voc", "cityscapes"):
        return
    for key in ("num_labeled", "manifest"):
        if f"data.{key}" in given:
            raise UserError(
                f"--set {given[f'data.{key}']}: layout {layout} takes its labeled images from data.splits "
                f"(labeled.txt), not data.{key}; write a split with `maskmatch-med manifest {layout} --root ROOT "
                "--labeled N --out DIR` and --set data.splits=DIR"
            )


def settle_overrides(raw: dict, given: dict[str, str]) -> None:
    """Make every `--set` count: an override wins over a recipe value that would replace it, or is
    refused in one line naming both keys and the fix. `given` maps each overridden dotted key to the
    `KEY=VALUE` text as typed. (checkpoint_every, unlabeled_batch_size and eval_window follow their
    source key only while unset, so an override of either side already counts.)"""
    _iterations_over_epochs(raw, given)
    _single_source_keys_under_adaptation(raw, given)
    _split_keys_of_natural_layouts(raw, given)


def load_recipe(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe (safe loader), apply `--set` overrides (each wins over the recipe values it
    conflicts with, see settle_overrides), validate."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: recipe not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a recipe must be a mapping of sections (data, model, method, train)")
    given: dict[str, str] = {}
    for text in overrides:
        parts, value = parse_override(text)
        apply_override(raw, parts, value, text)
        given.update(dict.fromkeys(_dotted_keys(parts, value), text))
    settle_overrides(raw, given)
    source = f"{path}" + (" (with --set)" if overrides else "")
    return recipe_from_dict(raw, source)
