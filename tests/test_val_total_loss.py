"""The validation clips' total loss (train.val_total_loss -> test/val_total_loss): the method's own training
loss on the reference's validation clips, the sources run on each clip's middle frame; the plateau schedule
of the paper's 3D configs reads it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine import checkpoint
from engine.config import ConfigError, load_config
from engine.data import views
from engine.experiment import Experiment
from engine.optim import OptimConfig, build_scheduler
from engine.trainer import train
from pipelines.loaders import build_clip_loader
from pipelines.plan import ClipPlan
from tests.conftest import ROOT
from tests.test_train import read_jsonl
from tests.test_video_train import CONFIG, T, fresh_accelerate_state, store  # noqa: F401 (fixtures)

ALPHA = 0.5


@pytest.fixture
def config(tmp_path, store, source_checkpoint):  # noqa: F811
    """The video tests' 3D SSKT config with the source live, alpha 0.5 and the total loss scored."""
    path = tmp_path / "video.yaml"
    text = CONFIG.format(data=store, weights=source_checkpoint, cache=tmp_path / "cache", runs=tmp_path / "runs")
    text = text.replace("cache: auto", "cache: off").replace("alpha: 1.0", f"alpha: {ALPHA}")
    path.write_text(text.replace("progress: false", "progress: false, val_total_loss: true"))
    return path


def by_hand(experiment, network) -> tuple[float, float]:
    """(mean task CE, mean CE + ALPHA * soft-CE(head, source on the middle frame)) over the validation clips."""
    cfg, videos = experiment.cfg, experiment.splits["test"]
    plan = ClipPlan(tuple(videos.frame_counts.tolist()), cfg.data.clip_length, cfg.data.eval_batch_size,
                    train=False, eval_clips=cfg.data.val_clips)
    loader = build_clip_loader("torch", videos, views(cfg, videos, train=False), plan, torch.device("cpu"), 0)
    (source,) = experiment.sources
    task = aux = clips = 0.0
    network.eval()
    with torch.no_grad():
        for batch in loader.epoch(0):
            output = network(batch["image"])
            task += float(F.cross_entropy(output.logits, batch["label"], reduction="sum"))
            teacher = source(batch["image"][:, :, T // 2]).softmax(1)
            aux += float(-(teacher * output.aux["object"].log_softmax(1)).sum())
            clips += len(batch["label"])
    return task / clips, (task + ALPHA * aux) / clips


def test_total_loss_is_task_ce_plus_alpha_times_the_aux_terms(config):
    experiment = Experiment(load_config(config))
    network = experiment.method.deployed()["target"].network
    record = experiment.evaluators["test"](network, "test/")
    task, total = by_hand(experiment, network)
    assert record["test/val_loss"] == pytest.approx(task, rel=1e-5)
    assert record["test/val_total_loss"] == pytest.approx(total, rel=1e-5)
    assert record["test/val_total_loss"] > record["test/val_loss"] + 0.1  # the auxiliary term counts


def test_the_key_is_recorded_only_when_asked_and_equals_val_loss_without_aux_terms(config):
    plain = Experiment(load_config(config, ["train.val_total_loss=false"]))
    record = plain.evaluators["test"](plain.method.deployed()["target"].network, "test/")
    assert "test/val_loss" in record and "test/val_total_loss" not in record
    # scratch: no auxiliary term, so the total loss is the task's cross-entropy
    scratch_config = config.with_name("scratch.yaml")
    text = config.read_text().split("\n")
    text = [line for line in text if not line.startswith(("sources:", "method:"))] + ["method: {name: scratch}"]
    scratch_config.write_text("\n".join(text))
    scratch = Experiment(load_config(scratch_config))
    record = scratch.evaluators["test"](scratch.method.deployed()["target"].network, "test/")
    assert record["test/val_total_loss"] == pytest.approx(record["test/val_loss"], rel=1e-6)


def test_the_plateau_schedule_steps_on_the_total_loss(config):
    """One epoch: the schedule's best is the recorded total loss, not the task loss; the run says which."""
    cfg = load_config(config, ["optim.plateau_metric=test/val_total_loss"])
    summary = train(cfg)
    record = read_jsonl(cfg.run_dir() / "metrics.jsonl")[0]
    schedules = checkpoint.last_state_dir(cfg.run_dir() / "checkpoints") / checkpoint.SCHEDULES_FILE
    saved = torch.load(schedules, weights_only=True)
    assert saved["target"]["best"] == pytest.approx(record["test/val_total_loss"])
    assert record["test/val_total_loss"] > record["test/val_loss"] + 0.1
    assert summary["lr_schedule"].startswith("plateau on test/val_total_loss")
    assert json.loads((cfg.run_dir() / "summary.json").read_text())["lr_schedule"] == summary["lr_schedule"]


@pytest.mark.parametrize("metric, lr", [("test/val_total_loss", 0.01), ("test/val_loss", 0.1)])
def test_plateau_drops_the_lr_on_whichever_loss_it_reads(metric, lr):
    """The task loss improves while the total loss stalls: only a schedule on the total loss drops the lr."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    schedule = build_scheduler(optimizer, OptimConfig(lr=0.1, schedule="plateau", plateau_metric=metric,
                                                      plateau_patience=1, weight_decay=0), epochs=10)
    for task, total in ((1.0, 2.0), (0.9, 2.1), (0.8, 2.2)):
        schedule.step({"test/val_loss": task, "test/val_total_loss": total})
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)


def test_the_paper_3d_configs_step_on_the_total_loss():
    configs = sorted((ROOT / "configs").glob("ucf101/*.yaml")) + sorted((ROOT / "configs").glob("hmdb51/*.yaml"))
    assert len(configs) == 16
    for path in configs:
        cfg = load_config(path)
        assert (cfg.optim.schedule, cfg.optim.plateau_metric, cfg.train.val_total_loss) == \
            ("plateau", "test/val_total_loss", True), path


def test_a_total_loss_nobody_records_is_a_one_line_config_error(config, tmp_path):
    with pytest.raises(ConfigError, match="optim.plateau_metric: test/val_total_loss is recorded only with "
                                          "train.val_total_loss: true"):
        load_config(config, ["train.val_total_loss=false", "optim.plateau_metric=test/val_total_loss"])
    with pytest.raises(ConfigError, match="train.val_total_loss: .* data.val_clips > 0"):
        load_config(config, ["data.val_clips=0"])
    with pytest.raises(ConfigError, match="train.val_total_loss: .* video data"):
        load_config(ROOT / "configs/demo/sskt.yaml", ["train.val_total_loss=true"])
    from engine.train import main
    assert main(["--config", str(config), "optim.plateau_metric=test/val_totl_loss"]) == 2  # a typo: exit 2
    assert not Path(load_config(config).run_dir()).exists()  # nothing kept
