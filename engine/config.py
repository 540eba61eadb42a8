"""Experiment configuration: one YAML file per experiment, validated before any work.

    python -m engine.train --config configs/cifar10/resnet20_sskt_PI.yaml optim.lr=0.05 sources.0.cache=off

Every field, its type and its default is below. Overrides are `dotted.key=value`
with the value parsed as YAML (so `train.epochs=2`, `sources=[]` work); list items
are addressed by position (`sources.1.weights=...`). Any error is a `ConfigError`
whose message names the file and key; the entry point turns it into exit status 2.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.types import NonNegativeInt, PositiveFloat, PositiveInt

from engine.methods import METHODS, MethodSection
from engine.optim import OptimConfig
from engine.schema import ConfigError, Strict, registered
from models.heads import head_names
from models.registry import target_names
from models.sources import FORMATS
from pipelines.datasets import READERS
from pipelines.datasets.video import VIDEO_READERS
from pipelines.loaders import LOADERS, no_clip_loader
from pipelines.views import ViewSet

__all__ = ["Config", "ConfigError", "OptimConfig", "load_config", "dump_config"]


class DataConfig(Strict):
    dataset: Annotated[str, registered(READERS, "data set")]
    root: Path = Path("data")
    download: bool = False  # fetch through torchvision when missing (needs network)
    image_size: PositiveInt | None = None  # base size for file data sets (VOC); arrays keep their own
    pad: NonNegativeInt = 4  # views are pad-`pad` crops x flips of the base image
    views: PositiveInt = 162  # K views per training sample (2 = original + mirror; 162 = every pad-4 crop x flip)
    # pipelines.loaders.LOADERS; auto: choose_loader (images), choose_clip_loader (clips)
    loader: Annotated[str, registered(LOADERS, "loader")] = "auto"
    workers: NonNegativeInt = 2
    batch_size: PositiveInt = 128  # global batch, split across processes (a multiple of their count)
    eval_batch_size: PositiveInt = 256
    limit: PositiveInt | None = None  # use only the first N training samples (quick trials)
    # Hold out this fraction of the training set (the same samples every run) as a validation split that
    # chooses best.pt; 0: no validation split, best.pt is chosen on the test split (the paper's protocol
    # reports the final epoch, which this does not change).
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = (0.2470, 0.2435, 0.2616)
    procedural: dict = Field(default_factory=dict)  # options of the embedded procedural data set
    # Video (ucf101, hmdb51: the frame store <root>/<name>.h5; frames: `root` is any frame store file).
    # `views` counts clip views there (pipelines.views.ClipViewSet, at most 50).
    split: int = Field(1, ge=1, le=3)  # official train/test split 1, 2 or 3
    clip_length: PositiveInt = 16  # frames per clip (the reference's sample_duration)
    sample_size: PositiveInt = 112  # clip height and width (the reference's sample_size)
    val_clips: NonNegativeInt = 3  # the reference's validation: this many clips per test video (0: skip it)

    @field_validator("views")
    @classmethod
    def _views_fit_pad(cls, views, info):
        if "pad" in info.data:  # the view set states its own rules; checked here, before any work
            try:
                ViewSet(pad=info.data["pad"], count=views)
            except ValueError as e:
                raise ValueError(str(e).removeprefix("views: ").split(", got")[0]) from None
        return views

    @field_validator("loader")
    @classmethod
    def _loader_reads_clips(cls, loader, info):
        if info.data.get("dataset") in VIDEO_READERS and LOADERS[loader].clips is None:
            raise ValueError(no_clip_loader(loader))
        return loader


class ModelConfig(Strict):
    target: Annotated[str, registered(target_names, "target")]  # models.registry: resnet20, resnet18, vgg16_bn, resnet3d_18, ...
    head: Annotated[str, registered(head_names, "head kind")] = "transfer_module"
    shortcut: Literal["A", "B"] | None = None  # 3D ResNets' shortcut (their factory's default: A)
    # Fine-tuning (models.finetune): start the target from this 3D-ResNets-PyTorch checkpoint ...
    pretrained: Path | None = None
    # ... and train only layer{ft_begin_index}..layer4 and fc (0: everything); the others get lr 0
    ft_begin_index: int = 0
    train_heads: bool = False  # with ft_begin_index > 0: give the auxiliary heads the lr (reference: no)

    @model_validator(mode="after")
    def _fine_tuning(self):
        if self.ft_begin_index and self.pretrained is None:
            raise ValueError("model.ft_begin_index: only applies with model.pretrained (a checkpoint to fine-tune)")
        if not 0 <= self.ft_begin_index <= 5:
            raise ValueError(f"model.ft_begin_index: 0 (train all) to 5 (classifier only), got {self.ft_begin_index}")
        return self

    def factory_kwargs(self) -> dict:
        return {} if self.shortcut is None else {"shortcut": self.shortcut}


class ResizeConfig(Strict):
    """How target images are resized for a source: by a factor (paper: 7/3 for CIFAR/STL) or to a size."""
    scale: PositiveFloat | None = None
    size: PositiveInt | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.scale is None) == (self.size is None):
            raise ValueError("give exactly one of resize.scale and resize.size")
        return self


class SourceConfig(Strict):
    name: str  # also the auxiliary head's name and the key of its outputs
    format: Annotated[str, registered(FORMATS, "source format")]
    arch: str | None = None  # torchvision architecture (resnet50, ...) or a models.registry name; a checkpoint
                             # this engine exported names its own
    weights: str | None = None  # torchvision weights enum (IMAGENET1K_V1) or a file path
    num_classes: PositiveInt | None = None  # read from the weights when omitted
    # Omitted: what the checkpoint records (one this engine exported carries its input size, mean and
    # std), else scale 7/3 (the paper's CIFAR/STL setting) and the ImageNet mean/std.
    resize: ResizeConfig | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] | None = None
    cache: Literal["off", "auto", "required", "rebuild"] = "auto"
    # Video: what the source sees of a clip's middle frame. own: its own resize and mean/std (above);
    # reference: the clip itself (its size, data.mean/std), as the SSKT reference's 3D code did.
    input: Literal["own", "reference"] = "own"

    @field_validator("cache", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false


class TrainConfig(Strict):
    epochs: PositiveInt = 200
    precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on a GPU that has it, else fp32
    grad_accum: PositiveInt = 1
    checkpoint_every: NonNegativeInt = 0  # also keep epoch_XXX.pt every N epochs (0: never)
    eval_every: PositiveInt = 1  # evaluate every N epochs (and always after the last)
    sync_bn: bool = True  # multi-process BatchNorm over the global batch, as one process would see it
    # The target and its batches in torch.channels_last (NHWC) memory, 2D targets only. auto: on for 2D
    # targets (`make bench`: a ResNet-20 step 1.21x faster so on CPU, 1.18x with two transfer modules; GPU
    # convolutions in bf16/fp16 prefer it), off for 3D ones (channels_last_3d is not measured here: true is
    # refused for a 3D target).
    channels_last: Literal["auto", True, False] = "auto"
    progress: bool = True


class RunConfig(Strict):
    root: Path = Path("runs")
    name: str | None = None  # default: the config's path under configs/, without .yaml
    # true: continue the run in runs/<name>/seed<k> (or a numbered <name>-N) made with these settings, or start
    # the first free numbered folder (engine.reruns); false: always start a fresh numbered folder
    resume: bool = True


class SourceCacheConfig(Strict):
    """Frozen-source outputs stored in HDF5 (engine/source_outputs/image_cache.py); each source's `cache` sets the mode."""
    root: Path = Path("data/source_cache")
    memory_gb: float = Field(8.0, ge=0.0)  # load a cache whole (on the GPU if there is one) when it fits; else read through HDF5
    batch_size: PositiveInt = 256  # images per source forward while building
    frame_stride: PositiveInt = 1  # video: outputs for every k-th frame; a clip's middle frame is rounded to one


class Config(Strict):
    seed: int = 0
    data: DataConfig
    model: ModelConfig
    sources: list[SourceConfig] = Field(default_factory=list)
    source_cache: SourceCacheConfig = Field(default_factory=SourceCacheConfig)
    method: MethodSection = Field(default_factory=lambda: METHODS["sskt"].Config())
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _consistent(self):
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"sources: names must be unique, got {names}")
        self.method.check(self)  # each method's rules about the other sections live with the method
        if self.optim.schedule == "plateau" and self.train.eval_every != 1:
            raise ValueError("train.eval_every: the plateau schedule reads the evaluation of every epoch; set it to 1")
        return self

    def run_dir(self) -> Path:
        return self.run.root / (self.run.name or "default") / f"seed{self.seed}"


def resumable_keys() -> set[str]:
    """Settings that may differ when an interrupted run is continued; anything else would mix two experiments.
    (run.root: a runs tree copied or moved elsewhere holds the same runs.)"""
    return {"train.epochs", "train.progress", "train.channels_last", "train.checkpoint_every", "train.eval_every",
            "data.workers", "run.root", "run.resume"}


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides:
        apply_override(raw, item, path)
    raw.setdefault("run", {}).setdefault("name", default_run_name(path))
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {describe_error(e.errors()[0])}") from None


def describe_error(err: dict) -> str:
    """`key: message (got value)`; in the method section, the union's tag is named as the method."""
    loc, hint = list(err["loc"]), ""
    if len(loc) > 1 and loc[0] == "method" and loc[1] in METHODS:
        method = loc.pop(1)
        if err["type"] == "extra_forbidden":
            hint = f" in method {method}'s section (its fields: {', '.join(METHODS[method].Config.model_fields)})"
    key = ".".join(str(p) for p in loc) or "(top level)"
    value = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
    if err["type"] == "method_name":  # the union could not pick a section: the name is at fault
        key, value = "method.name", f" (got {err['input'].get('name')!r})" if isinstance(err["input"], dict) else ""
    message = err["msg"].removeprefix("Value error, ")
    return f"{key}: {message}{hint}{value}"


def apply_override(raw: dict, item: str, path: Path) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected key=value")
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: i + 1]), create=True, item=item)
    last = parts[-1]
    value = yaml.safe_load(text)
    if isinstance(node, list):
        _child(node, last, key, create=False, item=item)
        node[int(last)] = value
    else:
        node[last] = value


def _child(node, part: str, where: str, create: bool, item: str):
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise ConfigError(f"override {item!r}: {where} is not an item of a list of {len(node)}")
        return node[int(part)]
    if not isinstance(node, dict):
        raise ConfigError(f"override {item!r}: {where} is not a section")
    if part not in node and create:
        node[part] = {}
    return node[part]


def default_run_name(path: Path) -> str:
    parts = path.resolve().with_suffix("").parts
    if "configs" in parts:
        return "/".join(parts[len(parts) - parts[::-1].index("configs"):])
    return path.stem


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
