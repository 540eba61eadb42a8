"""Experiment configuration: one YAML file per experiment, validated before any work.

    python -m engine.train --config configs/cifar10/resnet20_sskt_PI.yaml optim.lr=0.05 sources.0.cache=off

Every field, its type and its default is below (the `data` section's in pipelines.datasets.schema:
one schema for image data sets, one for video). A config file may name bases it builds on
(`base: ../_bases/cifar.yaml`, foundation.config_files): it states only what differs from them.
Overrides are `dotted.key=value` with the value parsed as YAML (so `train.epochs=2`, `sources=[]`
work); list items are addressed by position (`sources.1.weights=...`). Any error is a one-line
`ConfigError` naming the file (and line and column for YAML syntax) and the key; an unknown key
names the closest valid one. The entry points turn it into exit status 2.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import to_jsonable_python
from pydantic.types import NonNegativeInt, PositiveFloat, PositiveInt

from engine.methods import METHODS, MethodSection
from engine.optim import OptimConfig
from foundation.config_files import origin_of, read_config_file, set_origin
from foundation.schema import ConfigError, Resumable, Strict, locate, marked_keys, registered
from foundation.schema import describe_error as describe_field_error
from models.heads import head_names
from models.registry import target_names
from models.sources import FORMATS
from pipelines.datasets.schema import DataSection, ImageDataConfig, VideoDataConfig

__all__ = ["Config", "ConfigError", "ImageDataConfig", "OptimConfig", "VideoDataConfig", "dump_config", "load_config",
           "neutral_keys", "resumable_keys"]


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
    # What the source sees of the target's input (for clips: of the middle frame); engine.experiment.resolve_sources.
    #   own        its own resize and mean/std (above)
    #   frame      the input at its size (the clip's 112x112), normalised with the source's own mean/std; cacheable
    #   reference  the SSKT reference's 3D sources: the input at its size, the data's mean/std (0-255 minus the
    #              ActivityNet mean) and BatchNorm on each batch's statistics (train mode): live only (cache: off)
    input: Literal["own", "frame", "reference"] = "own"

    @field_validator("cache", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    @model_validator(mode="after")
    def _input_policy(self):
        if self.input == "reference" and self.cache != "off":
            raise ValueError("input: reference normalises each batch with its own BatchNorm statistics, so its "
                             "outputs cannot be cached; set cache: off, or use input: frame (cacheable)")
        if self.input != "own" and self.resize is not None:
            raise ValueError(f"resize: input: {self.input} sees the target's input at its own size; "
                             f"remove resize or use input: own")
        if self.input == "reference" and (self.mean is not None or self.std is not None):
            raise ValueError("mean/std: input: reference normalises with data.mean/std; remove them or use input: frame")
        return self


class TrainConfig(Strict):
    epochs: Annotated[PositiveInt, Resumable()] = 200  # a resumed run may go on to more epochs
    precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on a GPU that has it, else fp32
    grad_accum: PositiveInt = 1
    checkpoint_every: Annotated[NonNegativeInt, Resumable()] = 0  # also keep epoch_XXX.pt every N epochs (0: never)
    eval_every: Annotated[PositiveInt, Resumable()] = 1  # evaluate every N epochs (and always after the last)
    sync_bn: bool = True  # multi-process BatchNorm over the global batch, as one process would see it
    # Also score the method's whole training loss on the validation clips (test/val_total_loss; SSKT: the task
    # loss plus its auxiliary terms against the sources, run live on each clip's middle frame): the loss the
    # SSKT reference's ReduceLROnPlateau read. Video data with data.val_clips > 0 only.
    val_total_loss: bool = False
    # The target and its batches in torch.channels_last (NHWC) memory, 2D targets only. auto: on for 2D
    # targets (`make bench`: a ResNet-20 step 1.21x faster so on CPU, 1.18x with two transfer modules; GPU
    # convolutions in bf16/fp16 prefer it), off for 3D ones (channels_last_3d is not measured here: true is
    # refused for a 3D target).
    channels_last: Annotated[Literal["auto", True, False], Resumable(neutral=True)] = "auto"
    # The method's networks compiled with torch.compile (TorchInductor), on a GPU with CUDA graphs (every
    # training batch has the same shape: pipelines.plan). auto: on for CUDA devices, where a small network's
    # step is mostly kernel launches; off on CPUs, where compiling takes longer than it saves. Compiled
    # networks compute what eager ones do and save the same state dicts: a resumed run may switch.
    compile: Annotated[Literal["auto", True, False], Resumable(neutral=True)] = "auto"
    progress: Annotated[bool, Resumable(neutral=True)] = True


class RunConfig(Strict):
    root: Annotated[Path, Resumable()] = Path("runs")  # a runs tree copied or moved elsewhere holds the same runs
    name: str | None = None  # default: the config's path under configs/, without .yaml
    # true: continue the run in runs/<name>/seed<k> (or a numbered <name>-N) made with these settings, or start
    # the first free numbered folder (engine.reruns); false: always start a fresh numbered folder
    resume: Annotated[bool, Resumable()] = True


class SourceCacheConfig(Strict):
    """Frozen-source outputs stored in HDF5 (engine/source_outputs/image_cache.py); each source's `cache` sets the mode."""
    root: Path = Path("data/source_cache")
    memory_gb: float = Field(8.0, ge=0.0)  # load a cache whole (on the GPU if there is one) when it fits; else read through HDF5
    batch_size: PositiveInt = 256  # images per source forward while building
    frame_stride: PositiveInt = 1  # video: outputs for every k-th frame; a clip's middle frame is rounded to one


class Config(Strict):
    seed: int = 0
    data: DataSection  # ImageDataConfig or VideoDataConfig, picked by data.dataset
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
        if self.train.val_total_loss and not getattr(self.data, "val_clips", 0):
            raise ValueError("train.val_total_loss: scored on the validation clips; it needs video data with "
                             "data.val_clips > 0")
        if self.optim.plateau_metric.endswith("val_total_loss") and not self.train.val_total_loss:
            raise ValueError(f"optim.plateau_metric: {self.optim.plateau_metric} is recorded only with "
                             "train.val_total_loss: true")
        return self

    def run_dir(self) -> Path:
        return self.run.root / (self.run.name or "default") / f"seed{self.seed}"


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """The experiment of a config file (its bases merged in: foundation.config_files) and overrides."""
    path = Path(path)
    raw, origins = read_config_file(path)
    for item in overrides:
        set_origin(origins, apply_override(raw, item, path), path)
    raw.setdefault("run", {}).setdefault("name", default_run_name(path))
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        origin = origin_of(origins, locate(Config, err["loc"]).key)
        where = path if origin in (None, path) else f"{origin} (a base of {path})"
        raise ConfigError(f"{where}: {describe_error(err)}") from None


def describe_error(err: dict) -> str:
    """`key: message (got value)`, or `unknown key ...; did you mean ...?` (foundation.schema); a method
    name the method union cannot pick is named as method.name."""
    if err["type"] == "method_name":
        value = f" (got {err['input'].get('name')!r})" if isinstance(err["input"], dict) else ""
        return f"method.name: {err['msg']}{value}"
    return describe_field_error(Config, err)


def _section_of(cfg: Config, key: str):
    """(the section of `cfg` that would hold dotted `key`, the key's last part), or (None, name)."""
    *path, name = key.split(".")
    node = cfg
    for part in path:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, Strict) and part in type(node).model_fields:
            node = getattr(node, part)
        else:
            return None, name
    return node, name


def retired_key(cfg: Config, key: str) -> bool:
    """Whether the section that would hold dotted `key` is in `cfg` but has no such field: a key that a
    config stored by an earlier schema holds (e.g. a video key in an image run's flat data section)."""
    node, name = _section_of(cfg, key)
    return isinstance(node, Strict) and name not in type(node).model_fields


def at_default(cfg: Config, key: str) -> bool:
    """Whether dotted `key` holds its schema default in `cfg`: what a config stored before the key existed
    computed (a new setting's default keeps what the code did before it)."""
    node, name = _section_of(cfg, key)
    if not isinstance(node, Strict) or name not in type(node).model_fields:
        return False
    default = type(node).model_fields[name].get_default(call_default_factory=True)
    return to_jsonable_python(getattr(node, name)) == to_jsonable_python(default)


def resumable_keys() -> set[str]:
    """Dotted keys that may differ when an interrupted run is resumed (fields marked `Resumable`):
    anything else would mix two experiments in one run."""
    return marked_keys(Config, lambda mark: isinstance(mark, Resumable))


def neutral_keys() -> set[str]:
    """Dotted keys that do not change what a run computes (fields marked `Resumable(neutral=True)`)."""
    return marked_keys(Config, lambda mark: isinstance(mark, Resumable) and mark.neutral)


def apply_override(raw: dict, item: str, path: Path) -> tuple[str, ...]:
    """Set `dotted.key=value` (the value parsed as YAML) in `raw`; the key's parts."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected key=value")
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: i + 1]), create=True, item=item)
    last = parts[-1]
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at column {len(key) + 2 + mark.column}" if mark else ""  # 1-based, in the whole key=value
        raise ConfigError(f"override {item!r}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if isinstance(node, list):
        _child(node, last, key, create=False, item=item)
        node[int(last)] = value
    else:
        node[last] = value
    return tuple(parts)


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
