"""The `data` section of an experiment config: one schema for image data sets, one for video data sets.

The data set picks the section (`DataSection`): a video reader's name (pipelines.datasets.video.
VIDEO_READERS: ucf101, hmdb51, frames) reads clips from a frame store and takes `VideoDataConfig`;
every other data set is images and takes `ImageDataConfig`. Each section holds only the keys that
apply to it and checks its own rules (views the view set allows, a loader that reads clips), so a
validated section is one the readers and loaders can use as it is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Union

from pydantic import Discriminator, Field, Tag, field_validator
from pydantic.types import NonNegativeInt, PositiveFloat, PositiveInt

from foundation.schema import Resumable, Strict, registered
from pipelines.datasets import READERS, DatasetError, has_own_val
from pipelines.datasets import procedural_video
from pipelines.datasets.procedural import parse_options
from pipelines.datasets.video import VIDEO_READERS
from pipelines.loaders import LOADERS, no_clip_loader
from pipelines.views import ClipViewSet, ViewSet


class BaseDataConfig(Strict):
    """What image and video data sections share."""
    dataset: str
    root: Path = Path("data")
    # pipelines.loaders.LOADERS; auto: choose_loader (images), choose_clip_loader (clips)
    loader: Annotated[str, registered(LOADERS, "loader")] = "auto"
    workers: Annotated[NonNegativeInt, Resumable(neutral=True)] = 2
    batch_size: PositiveInt = 128  # global batch, split across processes (a multiple of their count)
    eval_batch_size: PositiveInt = 256
    # Training batches: false, every sample every epoch, the last batch ragged (the reference's DataLoader);
    # true, full batches only (the ragged rest, other samples each epoch, left out): one step shape, so a
    # compiled step (train.compile) records one graph instead of two.
    drop_last: bool = False
    limit: PositiveInt | None = None  # use only the first N training samples (quick trials)
    mean: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = (0.2470, 0.2435, 0.2616)

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits an experiment reads (pipelines.datasets.build_split)."""
        return ("train", "test")


class ImageDataConfig(BaseDataConfig):
    """Images: cifar10, cifar100, stl10, voc2007, procedural (the embedded demo set), ..."""
    dataset: Annotated[str, registered(READERS, "data set")]
    download: bool = False  # fetch through torchvision when missing (needs network)
    image_size: PositiveInt | None = None  # base size for file data sets (VOC); arrays keep their own
    pad: NonNegativeInt = 4  # views are pad-`pad` crops x flips of the base image
    views: PositiveInt = 162  # K views per training sample (2 = original + mirror; 162 = every pad-4 crop x flip)
    # Hold out this fraction of the training set (the same samples every run) as a validation split that
    # chooses best.pt; 0: no validation split, best.pt is chosen on the test split (the paper's protocol
    # reports the final epoch, which this does not change).
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    procedural: dict = Field(default_factory=dict)  # options of the embedded procedural data set

    @field_validator("dataset")
    @classmethod
    def _images(cls, dataset):
        if dataset in VIDEO_READERS:  # only when built directly: in a config, the data set picks the section
            raise ValueError(f"{dataset} is a video data set: its section is VideoDataConfig")
        return dataset

    @field_validator("views")
    @classmethod
    def _views_fit_pad(cls, views, info):
        if "pad" in info.data:  # the view set states its own rules
            try:
                ViewSet(pad=info.data["pad"], count=views)
            except ValueError as e:
                raise ValueError(str(e).removeprefix("views: ").split(", got")[0]) from None
        return views

    @field_validator("procedural")
    @classmethod
    def _procedural_options(cls, options):
        try:
            parse_options(options)
        except DatasetError as e:
            raise ValueError(str(e).removeprefix("data.procedural: ")) from None
        return options

    @property
    def splits(self) -> tuple[str, ...]:
        """train and test, and val where data.val_fraction cuts one or the data set has its own."""
        return ("train", "test", "val") if self.val_fraction or has_own_val(self) else ("train", "test")


class VideoDataConfig(BaseDataConfig):
    """Clips from a frame store (tools/preprocess_video.py): ucf101 and hmdb51 read `<root>/<name>.h5`;
    frames reads the store file `root` of any data set."""
    dataset: Annotated[str, registered(VIDEO_READERS, "video data set")]
    split: int = Field(1, ge=1, le=3)  # official train/test split 1, 2 or 3
    clip_length: PositiveInt = 16  # frames per clip (the reference's sample_duration)
    sample_size: PositiveInt = 112  # clip height and width (the reference's sample_size)
    views: PositiveInt = 50  # clip views (pipelines.views.ClipViewSet): 50 = the reference's multi-scale corner crops x flips
    val_clips: NonNegativeInt = 3  # the reference's validation: this many clips per test video (0: skip it)
    # The procedural video generator's options (the video demo's `frames` store, made by tools/demo_video.py)
    procedural: dict = Field(default_factory=dict)

    @field_validator("procedural")
    @classmethod
    def _procedural_video_options(cls, options):
        procedural_video.options(**options)  # a ValueError names the option
        return options

    @field_validator("views")
    @classmethod
    def _clip_views(cls, views):
        try:
            ClipViewSet(count=views)
        except ValueError as e:
            raise ValueError(str(e).removeprefix("clip views: ").split(", got")[0]) from None
        return views

    @field_validator("loader")
    @classmethod
    def _loader_reads_clips(cls, loader):
        if LOADERS[loader].clips is None:
            raise ValueError(no_clip_loader(loader))
        return loader


def _kind(section) -> str:
    dataset = section.get("dataset") if isinstance(section, dict) else getattr(section, "dataset", None)
    return "video" if dataset in VIDEO_READERS else "image"


DataSection = Annotated[
    Union[Annotated[ImageDataConfig, Tag("image")], Annotated[VideoDataConfig, Tag("video")]],
    Discriminator(_kind),
]

__all__ = ["BaseDataConfig", "DataSection", "ImageDataConfig", "VideoDataConfig"]
