"""The one builder: a validated config -> everything an entry point needs, assembled in one place.

    experiment = Experiment(cfg, accelerator)
    experiment.splits           {"train", "test"[, "val"]}: pipelines.datasets.build_split
    experiment.sources          the frozen sources, resolved (resolve_sources) and loaded (models.sources)
    experiment.views            the training view set (engine.data.views)
    experiment.train_loader     this process's training batches
    experiment.source_outputs   batch -> {source: logits}, live or from the caches (built where needed)
    experiment.evaluators       {split: evaluate(network, prefix)} for every split but train
    experiment.method           built (networks, heads) and set up (optimizers, accelerator.prepare)

Every entry point (engine.train, engine.evaluate, tools.cache_sources, tools.bench, tools.gpu_check) builds
through this class, so what it measures or caches is what training computes. Each part is built on first use:
an entry point pays for what it reads (engine.evaluate reads only `evaluators`, tools.cache_sources only
`source_outputs`). The inputs a config names (its splits and sources' weight files) are read together on the
first use of any of them, and every missing or unreadable one is reported in one error, one line each.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch
from accelerate import Accelerator

from engine import data
from engine.evaluation import Evaluator, build_evaluator, primary_metric
from engine.methods import Context, Method, build_method
from engine.schema import ConfigError
from engine.source_outputs import SourceOutputs, build_source_outputs, frame_stride
from foundation.errors import UserError
from models.finetune import ModelError, read_checkpoint
from models.sources import FrozenSource, SourceError, load_source
from pipelines.datasets import DatasetError, build_split, is_video


def make_accelerator(cfg, project_dir: Path | str | None = None) -> Accelerator:
    """One process's Accelerator for the config's precision (auto: bf16 on a GPU that has it, else fp32),
    gradient accumulation and, given a `project_dir`, TensorBoard logging under it."""
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # cpu=True where there is no GPU: Accelerate then forms a gloo group from torchrun's variables.
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision,
                       gradient_accumulation_steps=cfg.train.grad_accum,
                       log_with=None if project_dir is None else "tensorboard",
                       project_dir=None if project_dir is None else str(project_dir))


def resolve_sources(cfg) -> list:
    """The sources' configs as they are loaded: `input: reference` sources see the target's own input, at its
    size (resize scale 1) with the data's mean/std, whatever their own preprocessing (the SSKT reference's 3D
    code fed 112x112 clip frames normalised the clip's way to ImageNet networks)."""
    resolved = []
    for source in cfg.sources:
        if source.input == "reference":
            source = source.model_copy(update={"resize": {"scale": 1.0}, "mean": tuple(cfg.data.mean),
                                               "std": tuple(cfg.data.std)})
        resolved.append(source)
    return resolved


def read_inputs(cfg, splits: tuple[str, ...] | None = None, sources: bool = True) -> tuple[dict, list]:
    """The named splits (default: every split of the config) and, with `sources`, the loaded sources (and,
    to train, the pretrained target's checkpoint is readable); every missing or bad input in one error, one
    line each, rather than one per attempt."""
    problems: list[UserError] = []

    def attempt(read):
        try:
            return read()
        except (DatasetError, SourceError, ModelError) as e:
            if str(e) not in map(str, problems):
                problems.append(e)

    read_splits = {}
    for name in splits or cfg.data.splits:
        read_splits[name] = attempt(lambda: build_split(cfg.data, name))
        if read_splits[name] is None:
            break  # the other splits live in the same data root: one line says where the data set goes
    loaded = [attempt(lambda: load_source(s, i)) for i, s in enumerate(resolve_sources(cfg))] if sources else []
    if cfg.model.pretrained is not None and "train" in read_splits:  # what fine-tuning starts from
        attempt(lambda: read_checkpoint(Path(cfg.model.pretrained)))
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise DatasetError(f"{len(problems)} inputs missing or unreadable:\n"
                           + "\n".join(f"  ({i}) {p}" for i, p in enumerate(problems, 1)))
    return read_splits, loaded


class Experiment:
    def __init__(self, cfg, accelerator: Accelerator | None = None, *, splits: tuple[str, ...] | None = None,
                 sources: bool = True, epochs: int | None = None):
        """`splits` / `sources`: the inputs this entry point reads (default all of the config's); `epochs`:
        the span the method's schedules are set up for (default train.epochs)."""
        self.cfg = cfg
        self.accelerator = accelerator or make_accelerator(cfg)
        self._wanted = (splits, sources)
        self.epochs = epochs or cfg.train.epochs

    # ------------------------------------------------------------ inputs

    @cached_property
    def _inputs(self) -> tuple[dict, list[FrozenSource]]:
        return read_inputs(self.cfg, *self._wanted)

    @property
    def splits(self) -> dict:
        return self._inputs[0]

    @property
    def sources(self) -> list[FrozenSource]:
        return self._inputs[1]

    @property
    def train_set(self):
        return self.splits["train"]

    # ------------------------------------------------------------ data

    @cached_property
    def views(self):
        return data.views(self.cfg, self.train_set, train=True)

    @cached_property
    def train_loader(self):
        return data.train_loader(self.cfg, self.train_set, self.views, self.accelerator,
                                 centre_stride=frame_stride(self.cfg) if is_video(self.train_set) else 1)

    @cached_property
    def source_outputs(self) -> SourceOutputs:
        return build_source_outputs(self.cfg, self.sources, self.train_set, self.views, self.accelerator)

    @cached_property
    def evaluators(self) -> dict[str, Evaluator]:
        return {name: build_evaluator(self.cfg, split, self.accelerator)
                for name, split in self.splits.items() if name != "train"}

    @property
    def metric(self) -> str:
        """The metric the run reports and selects `best` by (engine.evaluation.primary_metric)."""
        return primary_metric(self.splits["test"])

    @property
    def input_size(self) -> list[int]:
        """What an exported network expects: [H, W] images or [T, H, W] clips."""
        return data.input_size(self.cfg, self.splits["test"])

    def describe(self) -> str:
        """Views and sizes, for a run's first line."""
        text = self.views.describe()
        if is_video(self.train_set):
            cached = any(s.cache != "off" for s in self.cfg.sources)
            text += f", {self.cfg.data.clip_length}-frame clips"
            text += f", sources cached every {frame_stride(self.cfg)}. frame" if cached else ""
        return text

    # ------------------------------------------------------------ the method

    @cached_property
    def method(self) -> Method:
        """The method's networks built for the data's classes and the sources' label spaces, then set up:
        optimizers, schedules and accelerator.prepare."""
        method = build_method(self.cfg.method)
        method.build(Context(self.cfg, self.train_set.num_classes, self.train_set.multilabel, self.sources))
        method.setup(self.accelerator, self.epochs)
        return method


__all__ = ["ConfigError", "Experiment", "make_accelerator", "read_inputs", "resolve_sources"]
