"""Config errors are one line naming the file and key (the closest valid key for an unknown one, line
and column for YAML syntax), the entry point exits 2; the data section is an image or a video section
picked by the data set; configs include bases; resumable keys are marked in the schema."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from engine.config import (ConfigError, ImageDataConfig, VideoDataConfig, dump_config, load_config, neutral_keys,
                           resumable_keys)

ROOT = Path(__file__).resolve().parents[1]

BASE = """
data: {dataset: procedural, root: DATA}
model: {target: resnet8}
method: {name: scratch}
"""

VIDEO = """
data: {dataset: ucf101, root: DATA, views: 20}
model: {target: resnet3d_10}
method: {name: scratch}
"""


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace("DATA", str(tmp_path / "data")))
    return path


def error(path, overrides=()) -> str:
    """The ConfigError's message, asserted to be one line."""
    with pytest.raises(ConfigError) as failure:
        load_config(path, list(overrides))
    message = str(failure.value)
    assert "\n" not in message, message
    return message


def test_valid_config_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, BASE), ["train.epochs=3", "optim.milestones=[1, 2]", "data.batch_size=32"])
    assert cfg.train.epochs == 3 and cfg.optim.milestones == [1, 2] and cfg.data.batch_size == 32
    assert cfg.run.name == "exp"


def test_list_items_are_addressed_by_position(tmp_path):
    text = BASE.replace("method: {name: scratch}", "sources: [{name: a, format: checkpoint, arch: resnet8, weights: x.pt}]")
    cfg = load_config(write(tmp_path, text), ["sources.0.weights=y.pt", "sources.0.cache=off"])
    assert cfg.sources[0].weights == "y.pt" and cfg.sources[0].cache == "off"
    with pytest.raises(ConfigError, match=r"sources.3 is not an item of a list of 1"):
        load_config(write(tmp_path, text), ["sources.3.weights=y.pt"])


def test_run_name_follows_configs_folder(tmp_path):
    folder = tmp_path / "configs" / "cifar10"
    folder.mkdir(parents=True)
    assert load_config(write(folder, BASE, "r20.yaml")).run.name == "cifar10/r20"


@pytest.mark.parametrize("text,overrides,message", [
    (BASE, ["data.batch_size=abc"], r"exp.yaml: data.batch_size: .*valid integer.*'abc'"),
    (BASE, ["data.dataset=imagenet"], r"exp.yaml: data.dataset: unknown data set 'imagenet'; known: cifar10, "),
    (BASE, ["method.name=sskt"], r"sskt needs at least one entry in sources"),
    (BASE, ["method.name=dmll"], r"exp.yaml: method.name: unknown method; known: dml, kd, maxl, scratch, sskt \(got 'dmll'\)"),
    (BASE, ["optim.lr"], r"expected key=value"),
])
def test_errors_name_file_and_key(tmp_path, text, overrides, message):
    assert re.search(message, error(write(tmp_path, text), overrides))


@pytest.mark.parametrize("text,overrides,message", [
    (BASE, ["train.epoch=3"], "exp.yaml: unknown key train.epoch; did you mean train.epochs?"),
    (BASE + "train: {epoch: 3}\n", [], "exp.yaml: unknown key train.epoch; did you mean train.epochs?"),
    (BASE, ["trian.epochs=3"], "exp.yaml: unknown key trian; did you mean train?"),
    (BASE, ["optim.milestone=[5]"], "unknown key optim.milestone; did you mean optim.milestones?"),
    (BASE, ["method.focal_gama=2"], "unknown key method.focal_gama; did you mean method.focal_gamma?"),
    (BASE.replace("method: {name: scratch}", "sources: [{name: a, format: checkpoint, resize: {scael: 2}}]"), [],
     "unknown key sources.0.resize.scael; did you mean sources.0.resize.scale?"),
    (BASE, ["data.pda=2"], "unknown key data.pda; did you mean data.pad?"),
    (BASE + "typo_key: 1\n", [], "unknown key typo_key; the top level has: seed, data, model, sources, "),
    (BASE, ["train.zzz=1"], "unknown key train.zzz; train has: epochs, precision, "),
])
def test_unknown_key_names_the_closest_valid_key(tmp_path, text, overrides, message):
    assert message in error(write(tmp_path, text), overrides)


def test_yaml_syntax_error_gives_file_line_and_column(tmp_path):
    path = write(tmp_path, "seed: 0\ndata: {dataset: procedural]\nmodel: x\n")
    assert error(path) == f"{path}:2:27: not valid YAML: expected ',' or '}}', but got ']'"
    path = write(tmp_path, "seed: 0\ndata:\n  dataset: procedural\n    root: x\n")
    assert error(path).startswith(f"{path}:4:9: not valid YAML: ")
    message = error(write(tmp_path, BASE), ["optim.milestones=[1,"])
    assert message.startswith("override 'optim.milestones=[1,': not valid YAML at column ")


def test_unreadable_or_missing_file_is_one_line(tmp_path):
    assert error(tmp_path / "none.yaml") == f"{tmp_path / 'none.yaml'}: file not found"
    (tmp_path / "latin1.yaml").write_bytes(b"seed: \xe9\n")
    assert error(tmp_path / "latin1.yaml").startswith(f"{tmp_path / 'latin1.yaml'}: cannot be read (")
    assert error(write(tmp_path, "- a\n- b\n")).endswith("exp.yaml: expected a mapping at the top level")


# ---------------------------------------------------------------- the data section: images or video

def test_the_data_set_picks_the_image_or_video_section(tmp_path):
    image = load_config(write(tmp_path, BASE)).data
    video = load_config(write(tmp_path, VIDEO)).data
    assert isinstance(image, ImageDataConfig) and not isinstance(image, VideoDataConfig)
    assert isinstance(video, VideoDataConfig) and video.views == 20 and video.split == 1
    assert load_config(write(tmp_path, VIDEO), ["data.dataset=frames"]).data.dataset == "frames"
    assert load_config(write(tmp_path, BASE), ["data.val_fraction=0.2"]).data.splits == ("train", "test", "val")
    assert image.splits == video.splits == ("train", "test")
    with pytest.raises(ValueError, match="ucf101 is a video data set: its section is VideoDataConfig"):
        ImageDataConfig(dataset="ucf101")
    with pytest.raises(ValueError, match="unknown video data set 'cifar10'; known: frames, hmdb51, ucf101"):
        VideoDataConfig(dataset="cifar10")
    # each section holds only its own keys
    assert {"pad", "val_fraction", "download", "image_size"}.isdisjoint(VideoDataConfig.model_fields)
    # `procedural` in each: the embedded procedural images' options, or the procedural videos' (the video demo)
    with pytest.raises(ValueError, match="unknown option 'label'"):
        VideoDataConfig(dataset="frames", procedural={"label": "shape"})
    assert {"split", "clip_length", "sample_size", "val_clips"}.isdisjoint(ImageDataConfig.model_fields)


@pytest.mark.parametrize("text,overrides,message", [
    (VIDEO, ["data.val_fraction=0.1"],
     "unknown key data.val_fraction in the video section of data (a key of the image section)"),
    (VIDEO, ["data.pad=2"], "unknown key data.pad in the video section of data (a key of the image section)"),
    (BASE, ["data.clip_length=8"], "unknown key data.clip_length in the image section of data (a key of the video section)"),
    (VIDEO, ["data.views=162"], "data.views: count must be 1 or even in 2..50 (got 162)"),
    (VIDEO, ["data.views=7"], "data.views: count must be 1 or even in 2..50 (got 7)"),
    (BASE, ["data.views=200"], "data.views: count must be in 1..162 for pad=4 (got 200)"),
    (BASE, ["data.pad=1", "data.views=20"], "data.views: count must be in 1..18 for pad=1 (got 20)"),
    (VIDEO, ["data.loader=resident"], "data.loader: 'resident' has no clip loader"),
    (VIDEO, ["data.split=4"], "data.split: Input should be less than or equal to 3 (got 4)"),
    (BASE, ["data.procedural={label: colour}"], "data.procedural.label: 'colour' is not one of"),
])
def test_each_data_section_checks_its_own_rules(tmp_path, text, overrides, message):
    assert message in error(write(tmp_path, text), overrides)


def test_video_sections_default_to_the_reference_clip_views(tmp_path):
    data = load_config(write(tmp_path, VIDEO.replace(", views: 20", ""))).data
    assert data.views == 50 and data.loader == "auto"


# ---------------------------------------------------------------- bases (includes)

def test_bases_merge_deeply_the_including_file_wins_and_lists_replace(tmp_path):
    write(tmp_path, "optim: {lr: 0.1, milestones: [60, 120, 160], gamma: 0.2}\ntrain: {epochs: 200}\n", "_bases/sgd.yaml")
    write(tmp_path, "model: {target: resnet8}\ndata: {dataset: procedural, root: DATA, views: 2}\n", "_bases/data.yaml")
    path = write(tmp_path, "base: [../_bases/sgd.yaml, ../_bases/data.yaml]\n"
                           "optim: {milestones: [5]}\ndata: {batch_size: 16}\nmethod: {name: scratch}\n", "cifar/exp.yaml")
    cfg = load_config(path, ["optim.gamma=0.5"])
    assert cfg.optim.lr == 0.1 and cfg.optim.milestones == [5] and cfg.optim.gamma == 0.5 and cfg.train.epochs == 200
    assert cfg.data.views == 2 and cfg.data.batch_size == 16 and cfg.data.dataset == "procedural"
    assert cfg.run.name == "exp"  # the including file names the run


def test_later_bases_win_and_bases_have_bases(tmp_path):
    write(tmp_path, "train: {epochs: 1, eval_every: 1}\noptim: {lr: 0.3}\n", "a.yaml")
    write(tmp_path, "base: a.yaml\ntrain: {epochs: 2}\n", "b.yaml")
    write(tmp_path, "train: {epochs: 3}\n" + BASE, "c.yaml")
    cfg = load_config(write(tmp_path, "base: [c.yaml, b.yaml]\n", "exp.yaml"))
    assert cfg.train.epochs == 2 and cfg.optim.lr == 0.3 and cfg.method.name == "scratch"


def test_base_cycles_missing_bases_and_bad_base_keys_are_one_line_naming_the_file(tmp_path):
    a = write(tmp_path, "base: b.yaml\n" + BASE, "a.yaml")
    write(tmp_path, "base: sub/../a.yaml\n", "b.yaml")
    assert error(a).startswith(f"{tmp_path / 'b.yaml'}: base sub/../a.yaml includes itself: {a} -> ")
    assert error(write(tmp_path, "base: self.yaml\n" + BASE, "self.yaml")).endswith("self.yaml includes itself: "
                                                                                     f"{tmp_path / 'self.yaml'} -> {tmp_path / 'self.yaml'}")
    missing = write(tmp_path, "base: ../nowhere/x.yaml\n" + BASE)
    assert error(missing) == f"{missing}: base ../nowhere/x.yaml not found (looked for {tmp_path / '../nowhere/x.yaml'})"
    assert "base: expected a file name or a list of file names, got 3" in error(write(tmp_path, "base: 3\n" + BASE))
    write(tmp_path, "data: {dataset: procedural,\n", "broken.yaml")
    assert error(write(tmp_path, "base: broken.yaml\n" + BASE)).startswith(f"{tmp_path / 'broken.yaml'}:2:1: not valid YAML")


def test_an_error_in_a_base_names_the_base(tmp_path):
    base = write(tmp_path, "optim: {milestone: [5]}\ntrain: {epochs: 0}\n", "_bases/b.yaml")
    path = write(tmp_path, "base: _bases/b.yaml\n" + BASE)
    assert error(path) == (f"{base} (a base of {path}): unknown key optim.milestone; did you mean optim.milestones?")
    assert error(path, ["optim.milestones=[5]", "optim.milestone=null"]).startswith(f"{path}: unknown key optim.milestone")
    # a value the including file (or an override) sets is the including file's
    assert error(path, ["optim={}"]).startswith(f"{base} (a base of {path}): train.epochs: Input should be greater than 0")
    assert error(path, ["optim={}", "train.epochs=-1"]).startswith(f"{path}: train.epochs: Input should be greater than 0")


# ---------------------------------------------------------------- resumable keys

def test_resumable_and_neutral_keys_come_from_the_schema():
    assert resumable_keys() == {"train.epochs", "train.progress", "train.channels_last", "train.compile", "run.resume",
                                "train.checkpoint_every", "train.eval_every", "data.workers", "run.root"}
    assert neutral_keys() == {"train.progress", "train.channels_last", "train.compile", "data.workers"}


def test_a_marked_field_is_found_in_nested_sections_and_union_members():
    from typing import Annotated, Union

    from pydantic import Discriminator, Tag

    from foundation.schema import Resumable, Strict, marked_keys

    class A(Strict):
        kind: str = "a"
        steps: Annotated[int, Resumable()] = 1

    class B(Strict):
        kind: str = "b"
        quiet: Annotated[bool, Resumable(neutral=True)] = False

    class Inner(Strict):
        size: int = 1
        label: Annotated[str, Resumable()] = ""

    class Outer(Strict):
        inner: Inner | None = None
        part: Annotated[Union[Annotated[A, Tag("a")], Annotated[B, Tag("b")]], Discriminator(lambda v: "a")] = A()
        plain: int = 0

    assert marked_keys(Outer, lambda m: isinstance(m, Resumable)) == {"inner.label", "part.steps", "part.quiet"}
    assert marked_keys(Outer, lambda m: isinstance(m, Resumable) and m.neutral) == {"part.quiet"}


def test_a_run_stored_with_the_earlier_flat_data_section_is_the_same_experiment(tmp_path):
    """Runs made before the data section was split into image and video sections hold the other kind's
    keys too: they are no settings of the run (it still resumes, and is not stale), any real change is."""
    from engine.reruns import changed_settings
    cfg = load_config(write(tmp_path, BASE))
    stored = yaml.safe_load(dump_config(cfg))
    stored["data"].update(split=1, clip_length=16, sample_size=112, val_clips=3)
    stored_file = tmp_path / "run" / "config.yaml"
    stored_file.parent.mkdir()
    stored_file.write_text(yaml.safe_dump(stored))
    assert changed_settings(stored_file, cfg) == []
    stored["data"]["pad"], stored["sources"] = 2, [{"name": "gone"}]
    stored_file.write_text(yaml.safe_dump(stored))
    assert changed_settings(stored_file, cfg) == ["data.pad=2 there, 4 now", "sources=None there, [] now",
                                                  "sources.0.name=gone there, None now"]


# ---------------------------------------------------------------- entry point, shipped configs

def run_train(*args, cwd):
    return subprocess.run([sys.executable, "-m", "engine.train", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_entry_point_exits_2_with_one_line(tmp_path):
    result = run_train("--config", str(write(tmp_path, BASE)), "train.epoch=3", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown key train.epoch; did you mean train.epochs?" in result.stderr


def test_missing_weight_file_exits_2_naming_it(tmp_path):
    text = BASE.replace("method: {name: scratch}",
                        "sources: [{name: obj, format: checkpoint, arch: resnet8, weights: nowhere/obj.pt}]")
    result = run_train("--config", str(write(tmp_path, text)), "data.procedural={train_size: 8, test_size: 8}",
                       cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "nowhere/obj.pt" in result.stderr and result.stderr.strip().count("\n") == 0


def test_missing_data_root_exits_2_naming_it(tmp_path):
    folder = tmp_path / "nocifar"
    text = BASE.replace("dataset: procedural, root: DATA", f"dataset: cifar10, root: {folder}")
    result = run_train("--config", str(write(tmp_path, text)), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert str(folder) in result.stderr and result.stderr.strip().count("\n") == 0


def shipped_configs() -> list[Path]:
    """Every experiment under configs/ (bases, in folders named _*, are parts of experiments)."""
    return sorted(p for p in (ROOT / "configs").rglob("*.yaml")
                  if not any(part.startswith("_") for part in p.relative_to(ROOT / "configs").parts))


def test_every_shipped_config_validates():
    configs = shipped_configs()
    assert len(configs) > 40
    names = {load_config(path).method.name for path in configs}
    assert names == {"scratch", "sskt", "kd", "dml", "maxl"}
