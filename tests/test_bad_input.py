"""Every bad input: one line on stderr naming the key, exit status 2, and no run folder left behind."""
from __future__ import annotations

import re
import urllib.error

import pytest
import torchvision.datasets
from accelerate.state import AcceleratorState, GradientState

from engine import reruns, trainer
from engine import train as train_module
from engine.config import (ConfigError, ImageDataConfig, ResizeConfig, SourceCacheConfig, SourceConfig, TrainConfig,
                           VideoDataConfig, load_config)
from engine.optim import OptimConfig
from engine.run_folder import RunFolder
from pipelines.datasets import DatasetError, build_split

# (override, the key the one line must name). Every Literal and range of the schema has a row
# (test_every_constrained_field_has_a_row keeps it so); method sections are checked with their methods.
BAD = [
    ("model.target=resnet21", "model.target"),
    ("model.head=mlp", "model.head"),
    ("data.dataset=imagenet", "data.dataset"),
    ("data.views=0", "data.views"),
    ("data.views=500", "data.views"),
    ("data.views=3", "data.views"),
    ("data.pad=-1", "data.pad"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.eval_batch_size=0", "data.eval_batch_size"),
    ("data.workers=-1", "data.workers"),
    ("data.limit=0", "data.limit"),
    ("data.image_size=0", "data.image_size"),
    ("data.val_fraction=1.0", "data.val_fraction"),
    ("data.val_fraction=-0.1", "data.val_fraction"),
    ("data.loader=gpu", "data.loader"),
    ("data.std=[0.2, 0, 0.2]", "data.std"),
    ("data.procedural={size: 3}", "data.procedural"),
    ("data={dataset: ucf101, split: 4}", "data.split"),
    ("data={dataset: ucf101, clip_length: 0}", "data.clip_length"),
    ("data={dataset: ucf101, sample_size: 0}", "data.sample_size"),
    ("data={dataset: ucf101, val_clips: -1}", "data.val_clips"),
    ("data={dataset: ucf101, views: 51}", "data.views"),
    ("data={dataset: ucf101, views: 3}", "data.views"),
    ("data={dataset: ucf101, val_fraction: 0.1}", "data.val_fraction"),
    ("data={dataset: cifar10, val_clips: 3}", "data.val_clips"),
    ("model.shortcut=C", "model.shortcut"),
    ("model.ft_begin_index=7", "model.ft_begin_index"),
    ("train.epochs=0", "train.epochs"),
    ("train.epochs=-1", "train.epochs"),
    ("train.precision=fp8", "train.precision"),
    ("train.channels_last=nhwc", "train.channels_last"),
    ("train.grad_accum=0", "train.grad_accum"),
    ("run.resume=always", "run.resume"),
    ("train.checkpoint_every=-1", "train.checkpoint_every"),
    ("train.eval_every=0", "train.eval_every"),
    ("optim.name=lamb", "optim.name"),
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=-0.1", "optim.lr"),
    ("optim.momentum=1.5", "optim.momentum"),
    ("optim.betas=[0.9, 1.0]", "optim.betas"),
    ("optim.weight_decay=-1", "optim.weight_decay"),
    ("optim.schedule=step", "optim.schedule"),
    ("optim.milestones=[5, 3]", "optim.milestones"),
    ("optim.milestones=[0]", "optim.milestones"),
    ("optim.gamma=0", "optim.gamma"),
    ("optim.warmup_epochs=-1", "optim.warmup_epochs"),
    ("optim.dampening=2", "optim.dampening"),
    ("optim.plateau_patience=-1", "optim.plateau_patience"),
    ("optim.plateau_factor=1.5", "optim.plateau_factor"),
    ("sources.0.input=raw", "sources.0.input"),
    ("source_cache.frame_stride=0", "source_cache.frame_stride"),
    ("sources.0.format=onnx", "sources.0.format"),
    ("sources.0.cache=sometimes", "sources.0.cache"),
    ("sources.0.num_classes=0", "sources.0.num_classes"),
    ("sources.0.std=[1, 1, -1]", "sources.0.std"),
    ("sources.0.resize={scale: 0}", "sources.0.resize.scale"),
    ("sources.0.resize={size: 0}", "sources.0.resize.size"),
    ("source_cache.memory_gb=-1", "source_cache.memory_gb"),
    ("source_cache.batch_size=0", "source_cache.batch_size"),
    ("method.name=distill", "method"),
    ("method.alpha=-0.1", "method.alpha"),
    ("method.temperature=0", "method.temperature"),
    ("method.focal_gamma=-1", "method.focal_gamma"),
    ("method.aux_loss=l2", "method.aux_loss"),
    ("method.aux_reduction=sum", "method.aux_reduction"),
    ("method={name: kd, alpha: 1.5}", "method.alpha"),
    ("method={name: maxl, psi: 0}", "method.psi"),
    ("method={name: dml, temperature: -1}", "method.temperature"),
]

SECTIONS = [("data", ImageDataConfig), ("data", VideoDataConfig), ("train", TrainConfig), ("optim", OptimConfig),
            ("sources.0", SourceConfig), ("sources.0.resize", ResizeConfig), ("source_cache", SourceCacheConfig)]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.mark.parametrize("override,key", BAD, ids=[o for o, _ in BAD])
def test_bad_override_is_one_line_exit_2_and_leaves_nothing(override, key, tiny_config, capsys):
    status = train_module.main(["--config", str(tiny_config), override])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and f" {key}" in err, err
    assert not (tiny_config.parent / "runs").exists()


def test_loader_names_come_from_the_registry(tiny_config, capsys):
    """data.loader is checked against pipelines.loaders.LOADERS, and a video data set against the
    loaders that have a clip variant; one line naming the value and the known names, no run folder."""
    for overrides, message in ((["data.loader=gpu"], "unknown loader 'gpu'; known: auto, dali, resident, torch"),
                               (["data.dataset=ucf101", "data.loader=resident"],
                                "'resident' has no clip loader (it holds in-memory image arrays, and clips are read "
                                "from a frame store); clips load with auto, dali, torch")):
        assert train_module.main(["--config", str(tiny_config), *overrides]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "data.loader" in err and message in err, err
        assert not (tiny_config.parent / "runs").exists()


def test_every_constrained_field_has_a_row():
    """A new Literal, range or validated field in a config section needs a bad value in BAD."""
    covered = {key for _, key in BAD}
    for prefix, model in SECTIONS:
        validated = {f for d in model.__pydantic_decorators__.field_validators.values() for f in d.info.fields}
        for name, field in model.model_fields.items():
            text = repr(field.annotation) + repr(field.metadata)
            if re.search(r"Literal|Gt\(|Ge\(|Lt\(|Le\(|AfterValidator", text) or name in validated:
                assert f"{prefix}.{name}" in covered, f"no bad-input row for {prefix}.{name}"
    assert "model.target" in covered and "model.head" in covered


def test_batch_that_processes_cannot_share_and_single_process_accelerate_launch(tiny_config, monkeypatch):
    cfg = load_config(tiny_config, ["data.batch_size=32"])
    run = RunFolder(cfg.run_dir())
    with pytest.raises(ConfigError, match=r"data.batch_size: 32 is not a multiple of the 3 processes"):
        reruns.check_processes(cfg, run, 3)
    reruns.check_processes(cfg, run, 2)
    # `accelerate launch --cpu --num_processes 2` runs one plain process with these variables.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match=r"torchrun --nproc_per_node N"):
        reruns.check_processes(cfg, run, 1)
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1: fine
    reruns.check_processes(cfg, run, 1)


def test_failed_start_leaves_no_folder_and_blocks_nothing(tiny_config, monkeypatch):
    cfg = load_config(tiny_config, ["train.epochs=1"])

    def crash(*args, **kwargs):
        raise RuntimeError("planted failure in the first epoch")
    monkeypatch.setattr(trainer, "train_one_epoch", crash)
    with pytest.raises(RuntimeError, match="planted"):
        trainer.train(cfg)
    assert not cfg.run_dir().exists()
    # A folder left by an older failed start (config.yaml, no checkpoint) does not block a start with
    # other settings either.
    cfg.run_dir().mkdir(parents=True)
    (cfg.run_dir() / "config.yaml").write_text("optim: {lr: 9.0}\n")
    assert not reruns.holds_a_run(RunFolder(cfg.run_dir()))
    _, run, finished = reruns.choose_run(load_config(tiny_config, ["optim.lr=0.01"]))
    assert run.path == cfg.run_dir() and finished is None


def test_all_missing_inputs_in_one_error_one_line_each(tmp_path, tiny_config, capsys):
    status = train_module.main(["--config", str(tiny_config), "data.dataset=cifar10", f"data.root={tmp_path}/nocifar",
                                f"sources.0.weights={tmp_path}/nowhere.pt"])
    lines = capsys.readouterr().err.splitlines()
    assert status == 2 and len(lines) == 3 and lines[0] == "error: 2 inputs missing or unreadable:", lines
    assert "(1) cifar10" in lines[1] and "nocifar/cifar-10-batches-py/{data_batch_1" in lines[1]
    assert "cifar-10-python.tar.gz" in lines[1] and "data.download=true" in lines[1]
    assert "(2)" in lines[2] and "nowhere.pt" in lines[2]
    assert not (tiny_config.parent / "runs").exists()


def test_a_missing_pretrained_target_is_listed_with_where_it_comes_from(tmp_path, tiny_config, capsys):
    status = train_module.main(["--config", str(tiny_config), f"sources.0.weights={tmp_path}/nowhere.pt",
                                f"model.pretrained={tmp_path}/resnet-18-kinetics.pth"])
    lines = capsys.readouterr().err.splitlines()
    assert status == 2 and len(lines) == 3 and lines[0] == "error: 2 inputs missing or unreadable:", lines
    assert "(1)" in lines[1] and "nowhere.pt" in lines[1]
    assert "(2)" in lines[2] and "resnet-18-kinetics.pth: pretrained checkpoint not found" in lines[2]
    assert "https://drive.google.com/drive/folders/" in lines[2]
    assert not (tiny_config.parent / "runs").exists()


def test_offline_download_says_where_files_go_and_come_from(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DatasetError) as failure:
        build_split(ImageDataConfig(dataset="cifar10", root=tmp_path, download=True), "train")
    message = str(failure.value)
    assert "\n" not in message and "URLError" in message
    assert f"{tmp_path}/cifar-10-batches-py/{{data_batch_1, data_batch_2" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
