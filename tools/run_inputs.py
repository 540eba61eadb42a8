"""What a planned run reads (its data, its sources' weight files, a pretrained target) and whether it is
there, checked before anything starts with the readers training itself uses.

engine.train.read_inputs(cfg) reads one config's splits and sources and raises one error naming every
missing input. A table's cells share their inputs (109 runs of the comparison table read six data sets
and a few weight files), so this reads each distinct input once, through read_inputs' own readers
(pipelines.datasets.build_split, models.sources.load_source, and models.finetune.load_pretrained_target
for model.pretrained): a data set is read whole (as a run reads it: CIFAR-10 in about a second), a
weight file loaded into its network. Nothing is downloaded unless `fetch` is given: a data set whose
config sets data.download, or a torchvision / Places365 weight file, is reported missing with where it
comes from, as one a run downloads itself where it has network. A weight file that another job of the
plan writes (a KD teacher's checkpoint) is not an input of the plan: it is skipped while that file is
not there yet.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.experiment import resolve_sources
from models.finetune import ModelError, load_pretrained_target
from models.sources import SourceError, load_source, weights_file
from pipelines.datasets import DatasetError, build_split


@dataclass(frozen=True)
class MissingInput:
    """One input a run cannot read: the reader's own line, which says where it goes and where it comes from."""
    kind: str  # "data", "source weights", "pretrained target"
    message: str
    downloaded: bool = False  # a run downloads it itself where it has network

    def text(self) -> str:
        return self.message + ("; a run downloads it itself where it has network (FETCH=1, --fetch: once, now)"
                               if self.downloaded else "")


def data_key(data_cfg) -> str:
    """A data section without what only changes how it is loaded."""
    return data_cfg.model_dump_json(exclude={"batch_size", "eval_batch_size", "workers", "loader"})


class InputCheck:
    """Every missing input of the configs it is asked about, each distinct input read once (`fetch`: the
    downloadable ones downloaded first)."""

    def __init__(self, fetch: bool = False):
        self.fetch = fetch
        self.read: dict[tuple, MissingInput | None] = {}
        self.train_sets: dict[str, tuple[int, tuple]] = {}  # data key -> (training samples, image size) as read

    def missing(self, cfg, written_by_plan: Callable[[Path], bool] = lambda path: False) -> list[MissingInput]:
        found = [self.split(cfg.data, "train")]
        if found[0] is None:  # the test files only once the training files are there: one line per data set
            found.append(self.split(cfg.data, "test"))
        for index, source in enumerate(resolve_sources(cfg)):
            found.append(self.source(source, index, written_by_plan))
        if cfg.model.pretrained is not None:
            found.append(self.pretrained(cfg.model))
        return list(dict.fromkeys(m for m in found if m is not None))

    def once(self, key: tuple, read: Callable[[], MissingInput | None]) -> MissingInput | None:
        if key not in self.read:
            self.read[key] = read()
        return self.read[key]

    def split(self, data_cfg, split: str) -> MissingInput | None:
        downloads = bool(getattr(data_cfg, "download", False))
        key = data_key(data_cfg)

        def read():
            try:
                images = build_split(data_cfg if self.fetch or not downloads else
                                     data_cfg.model_copy(update={"download": False}), split)
            except DatasetError as e:  # (after a failed fetch, its reason is in the message)
                return MissingInput("data", str(e), downloaded=downloads and not self.fetch)
            if split == "train":
                self.train_sets[key] = (len(images), tuple(getattr(images, "image_size", ())))
            return None
        return self.once(("data", key, split), read)

    def train_set(self, data_cfg) -> tuple[int, tuple] | None:
        """(training samples, image size) of a data section this check read; None if it could not."""
        return self.train_sets.get(data_key(data_cfg))

    def source(self, source_cfg, index: int, written_by_plan: Callable[[Path], bool]) -> MissingInput | None:
        try:
            path, url = weights_file(source_cfg, index)
        except SourceError as e:
            return MissingInput("source weights", str(e))
        if not path.exists() and written_by_plan(path):
            return None

        def read():
            if url is not None and not path.exists() and not self.fetch:
                return MissingInput("source weights", f"source '{source_cfg.name}': weights file {path} is missing; "
                                    f"it comes from {url}", downloaded=True)
            try:
                load_source(source_cfg, index)
            except SourceError as e:
                return MissingInput("source weights", str(e))
            return None
        key = source_cfg.model_dump_json(exclude={"name", "cache", "input"}, warnings=False)
        return self.once(("source", key, str(path)), read)

    def pretrained(self, model_cfg) -> MissingInput | None:
        def read():
            try:  # the classifier is replaced whatever its class count: any count checks the file
                load_pretrained_target(model_cfg.target, 2, model_cfg.pretrained, **model_cfg.factory_kwargs())
            except ModelError as e:
                return MissingInput("pretrained target", f"model.pretrained: {e}")
            return None
        return self.once(("pretrained", model_cfg.target, str(model_cfg.pretrained), str(model_cfg.shortcut)), read)
