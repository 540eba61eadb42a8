"""make reproduce checks every run's inputs before anything starts: PRINT=1 names the missing ones, grouped, with
where each comes from; each distinct input is read once; a local run skips the runs whose inputs are missing."""
from __future__ import annotations

import pytest

from tools import reproduce, run_inputs

CIFAR = """
data: {{dataset: cifar10, root: {data}/cifar10, download: true}}
model: {{target: resnet20, head: transfer_module}}
sources:
  - {{name: imagenet, format: torchvision, arch: resnet50, weights: IMAGENET1K_V1}}
method: {{name: sskt}}
train: {{epochs: 1, progress: false}}
"""
CIFAR_DML = """
data: {{dataset: cifar10, root: {data}/cifar10, download: true, batch_size: 64}}
model: {{target: resnet20}}
method: {{name: dml}}
train: {{epochs: 1, progress: false}}
"""
TABLE = """
title: inputs
metric: test/top1
columns: [SSKT, DML, tiny]
rows:
  - label: cifar
    cells:
      SSKT: {{config: {sskt}}}
      DML: {{config: {dml}}}
  - label: procedural
    cells:
      tiny: {{config: {tiny}}}
"""


@pytest.fixture
def table(tmp_path, tiny_config, monkeypatch):
    """CIFAR-10 cells whose data and source weights are missing (data under tmp_path, torch hub in tmp_path),
    and the procedural tiny cell, whose inputs are all there."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "sskt.yaml").write_text(CIFAR.format(data=tmp_path / "data"))
    (tmp_path / "dml.yaml").write_text(CIFAR_DML.format(data=tmp_path / "data"))
    path = tmp_path / "table.yaml"
    path.write_text(TABLE.format(sskt=tmp_path / "sskt.yaml", dml=tmp_path / "dml.yaml", tiny=tiny_config))
    return path


def test_print_names_every_missing_input_once_with_where_it_comes_from(table, tmp_path, monkeypatch, capsys):
    reads = []
    real = run_inputs.build_split
    monkeypatch.setattr(run_inputs, "build_split",
                        lambda cfg, split: reads.append((cfg.dataset, split)) or real(cfg, split))
    assert reproduce.main(["--table", str(table), "--seeds", "2", "--runs", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("# inputs missing"):out.index("# cifar / SSKT seed 0")]
    assert block.startswith("# inputs missing (2), read by 4 of the 6 runs to do:\n# data:\n")
    cifar = tmp_path / "data" / "cifar10"
    assert (f"#   cifar10: missing {cifar}/cifar-10-batches-py/{{data_batch_1, data_batch_2, data_batch_3, data_batch_4, "
            f"data_batch_5, batches.meta}}; unpack https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into {cifar}"
            in block)
    assert "a run downloads it itself where it has network" in block  # data.download: true, not fetched now
    assert "#     read by 4 run(s): cifar / SSKT, cifar / DML\n" in block
    weights = tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert (f"# source weights:\n#   source 'imagenet': weights file {weights} is missing; it comes from "
            "https://download.pytorch.org/models/resnet50-0676ba61.pth" in block)
    assert "#     read by 2 run(s): cifar / SSKT\n" in block
    assert "procedural" not in block  # its data and source are there
    assert out.count("cannot start until its missing inputs are there") == 4
    tiny = next(line for line in out.splitlines() if line.startswith("# procedural / tiny seed 0:"))
    assert "new run in" in tiny and "cannot start" not in tiny
    assert "6 cell x seed runs: 0 done, 0 stale, 0 resume, 6 new, 0 missing config; 4 cannot start" in out
    assert reads.count(("cifar10", "train")) == 1 and ("cifar10", "test") not in reads  # once for 4 runs
    assert reads.count(("procedural", "train")) == reads.count(("procedural", "test")) == 1
    assert not cifar.exists() and not weights.exists()  # nothing downloaded


def test_a_local_run_skips_the_runs_whose_inputs_are_missing(tmp_path, tiny_config, capsys):
    missing = tmp_path / "nowhere" / "object.pt"
    table = tmp_path / "t.yaml"
    table.write_text(f"title: t\nmetric: test/top1\ncolumns: [A]\nrows: [{{label: r, cells: {{A: {{config: {tiny_config}, "
                     f"overrides: [sources.0.weights={missing}], run: t/a}}}}}}]\n")
    runs = tmp_path / "runs"
    assert reproduce.main(["--table", str(table), "--seeds", "1", "--runs", str(runs)]) == 1
    captured = capsys.readouterr()
    assert f"#   source 'object': weights file {missing} not found\n" in captured.out
    assert "# r / A seed 0: inputs missing (listed first); not run" in captured.err
    assert not (runs / "t").exists()  # never started


def test_a_weight_file_the_plan_writes_is_not_a_missing_input(tmp_path, capsys):
    """configs/demo/kd.yaml reads its teacher's checkpoint, which the plan's first job writes."""
    table = tmp_path / "kd.yaml"
    table.write_text("title: kd\nmetric: test/top1\ncolumns: [KD]\n"
                     "rows: [{label: demo, cells: {KD: {config: configs/demo/kd.yaml}}}]\n")
    assert reproduce.main(["--table", str(table), "--seeds", "1", "--runs", str(tmp_path / "runs"), "--dry-run",
                           f"data.root={tmp_path / 'data'}", "data.procedural={train_size: 40, test_size: 20}"]) == 0
    out = capsys.readouterr().out
    assert "inputs missing" not in out and "cannot start" not in out
