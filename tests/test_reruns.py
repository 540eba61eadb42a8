"""Reruns never corrupt a run: exact resume after Ctrl-C (before a milestone, mid-cosine), extension
rules, a finished rerun rewrites nothing, refusals name the command that works."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState

from engine import checkpoint
from engine import reruns
from engine import train as train_module
from engine.run_folder import RunFolder
from engine.config import ConfigError, load_config

# Scratch on the tiny procedural set: the fastest run that still has a schedule, BatchNorm and RNG.
FAST = ["sources=[]", "method={name: scratch}", "train.epochs=3", "data.batch_size=16", "data.eval_batch_size=16",
        "data.procedural={label: shape, train_size: 32, test_size: 16}"]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    reset_accelerate()


def reset_accelerate():
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def run(tiny_config, *overrides) -> int:
    reset_accelerate()
    return train_module.main(["--config", str(tiny_config), *FAST, *overrides])


def weights(tiny_config, name):
    path = tiny_config.parent / "runs" / name / "seed0" / "checkpoints" / "final.pt"
    return torch.load(path, weights_only=True)["state_dict"]


def history(tiny_config, name):
    path = tiny_config.parent / "runs" / name / "seed0" / "metrics.jsonl"
    return [{k: v for k, v in json.loads(line).items() if "seconds" not in k and "per_s" not in k}
            for line in path.read_text().splitlines()]


def assert_same_run(tiny_config, a, b):
    wa, wb = weights(tiny_config, a), weights(tiny_config, b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert history(tiny_config, a) == history(tiny_config, b)


def sigint_after_epoch(monkeypatch, epoch: int):
    """A real SIGINT to this process right after `epoch`'s checkpoint, as Ctrl-C would send. Python's own
    handler is installed first: a shell without job control starts background jobs with SIGINT ignored."""
    real_save = checkpoint.save_training_state
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def save_then_ctrl_c(accelerator, folder, state, schedules=None):
        real_save(accelerator, folder, state, schedules)
        if state["epoch"] == epoch:
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(checkpoint, "save_training_state", save_then_ctrl_c)

    def restore():
        monkeypatch.setattr(checkpoint, "save_training_state", real_save)
        signal.signal(signal.SIGINT, previous)
    return restore


def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_multistep_resume_before_milestone_and_extension_end_as_one_run(tiny_config, monkeypatch, capsys):
    schedule = ["optim.schedule=multistep", "optim.milestones=[2]"]  # the lr drops for the third epoch
    assert run(tiny_config, *schedule, "run.name=whole") == 0

    restore = sigint_after_epoch(monkeypatch, 1)
    assert run(tiny_config, *schedule, "run.name=parts") == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.strip().endswith("interrupted; the state after epoch 1 is saved: the same command resumes from it"), err
    restore()
    assert run(tiny_config, *schedule, "run.name=parts") == 0
    assert_same_run(tiny_config, "whole", "parts")
    assert [r["lr"] for r in history(tiny_config, "parts")] == pytest.approx([0.05, 0.05, 0.01])

    # A finished 2-epoch multistep run extended to 3 ends as the 3-epoch run (the schedule does not
    # depend on the total); documented in the README.
    assert run(tiny_config, *schedule, "run.name=extended", "train.epochs=2") == 0
    assert run(tiny_config, *schedule, "run.name=extended") == 0
    assert_same_run(tiny_config, "whole", "extended")
    summary = json.loads((tiny_config.parent / "runs" / "extended" / "seed0" / "summary.json").read_text())
    assert summary["epochs"] == 3


def test_cosine_resume_mid_schedule_and_what_is_refused(tiny_config, monkeypatch, capsys):
    schedule = ["optim.schedule=cosine"]
    assert run(tiny_config, *schedule, "run.name=whole") == 0
    restore = sigint_after_epoch(monkeypatch, 1)
    assert run(tiny_config, *schedule, "run.name=parts") == 130
    restore()
    assert run(tiny_config, *schedule, "run.name=parts") == 0
    assert_same_run(tiny_config, "whole", "parts")
    lrs = [r["lr"] for r in history(tiny_config, "parts")]
    assert lrs == pytest.approx([0.05, 0.05 * 0.75, 0.05 * 0.25])  # 0.5 * (1 + cos(pi * e / 3))

    folder = tiny_config.parent / "runs" / "whole" / "seed0"
    before = snapshot(folder)
    capsys.readouterr()
    assert run(tiny_config, *schedule, "run.name=whole") == 0  # finished: nothing to do
    assert "already finished" in capsys.readouterr().out
    # A config this run cannot be continued into trains in a fresh numbered folder, and one line says why.
    for changed, reason in [
        ("train.epochs=4", r"schedule \(cosine\) spans train.epochs=3"),
        ("train.epochs=2", r"already trained 3 epochs, more than train.epochs=2"),
        ("optim.lr=0.2", r"optim.lr=0.05 there, 0.2 now"),
    ]:
        assert run(tiny_config, *schedule, "run.name=whole", changed) == 0
        out = capsys.readouterr().out
        assert re_search(reason, out) and re_search(r"this run goes to \S+/whole-\d/seed0", out), out
    assert snapshot(folder) == before  # no file rewritten, not even touched


def re_search(pattern, text):
    import re
    return re.search(pattern, text) is not None


def test_resume_on_another_process_count_is_refused(tiny_config):
    cfg = load_config(tiny_config, [*FAST, "train.epochs=1", "train.epochs=2"])
    folder = cfg.run_dir() / "checkpoints" / "last"
    folder.mkdir(parents=True)
    (folder / "trainer.json").write_text(json.dumps({"epoch": 1, "processes": 2}))
    with pytest.raises(ConfigError, match=r"trained by 2 process\(es\), not 1; resume it with 2"):
        reruns.check_processes(cfg, RunFolder(cfg.run_dir()), 1)


def test_a_key_newer_than_the_run_is_the_same_setting_at_its_default(tiny_config, tmp_path):
    """A run stored before a setting existed computed what the setting's default computes: it stays the same
    run (resumed, reused by make reproduce and make results); any other value of the new key is a change,
    and so is a stored key that differs."""
    import yaml
    cfg = load_config(tiny_config)
    stored = cfg.model_dump(mode="json")
    del stored["data"]["drop_last"], stored["train"]["compile"]  # keys an older schema did not have
    stored_file = tmp_path / "config.yaml"
    stored_file.write_text(yaml.safe_dump(stored))
    assert reruns.changed_settings(stored_file, cfg) == []
    assert reruns.changed_settings(stored_file, load_config(tiny_config, ["data.drop_last=true"])) == [
        "data.drop_last=None there, True now"]
    stored["data"]["batch_size"] += 1
    stored_file.write_text(yaml.safe_dump(stored))
    assert reruns.changed_settings(stored_file, cfg) == [
        f"data.batch_size={cfg.data.batch_size + 1} there, {cfg.data.batch_size} now"]
