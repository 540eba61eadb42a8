"""The embedded demo's table (tables/demo.yaml) and its committed stand-in sources (tools/demo_sources.py)."""
from __future__ import annotations

import json
import shutil

import pytest

from engine.config import ConfigError, load_config
from tools import demo_sources
from tools.tables import cell_label, load_table


def test_demo_table_rows_are_valid_configs_in_their_run_folders():
    """tables/demo.yaml (make demo): every cell a shape-task config with the same budget, in runs/demo/table/."""
    table = load_table("demo")
    cells = {cell_label(row, column): cell for row, column, cell in table.cells()}
    assert list(cells) == ["none / scratch", "none / KD", "none / DML",
                           *(f"{heads} / SSKT {s}" for heads in ("transfer modules", "linear heads") for s in ("I", "P", "P+I"))]
    assert table.baseline.column == "scratch" and table.layout == "cells"
    runs = {cell.run for cell in cells.values()}
    assert runs == {f"demo/table/{name}" for name in ("scratch", "kd", "dml", "sskt_i_tm", "sskt_p_tm", "sskt_p_i_tm",
                                                      "sskt_i_linear", "sskt_p_linear", "sskt_p_i_linear")}
    weights, budgets = set(), set()
    for label, cell in cells.items():
        cfg = load_config(cell.config, [*cell.overrides, "seed=2"])
        assert cfg.data.procedural["label"] == "shape" and cfg.seed == 2, label
        budgets.add((cfg.train.epochs, cfg.train.eval_every, cfg.data.batch_size, cfg.data.procedural["train_size"]))
        assert cfg.model.head == {"transfer modules": "transfer_module", "linear heads": "linear"}.get(
            label.split(" / ")[0], cfg.model.head)
        weights |= {s.weights for s in cfg.sources}
    assert weights == {f"configs/demo/sources/{name}.pt" for name in demo_sources.SOURCES} | \
        {"runs/demo/kd_teacher/seed0/checkpoints/final.pt"}  # KD's teacher: made first by make demo
    make_train = load_config("configs/demo/sskt.yaml")  # the table measures the budget `make train` runs
    assert budgets == {(make_train.train.epochs, make_train.train.eval_every, make_train.data.batch_size,
                        make_train.data.procedural["train_size"])}


def test_committed_sources_are_current():
    paths = demo_sources.check_committed_sources()
    assert set(paths) == set(demo_sources.SOURCES)
    for name in paths:
        recorded = json.loads(demo_sources.manifest_path(name).read_text())
        assert recorded["identity"] == demo_sources.identity(demo_sources.SOURCES[name], [])


def test_stale_or_altered_export_is_refused(tmp_path):
    where = tmp_path / "sources"
    shutil.copytree(demo_sources.COMMITTED, where)
    with pytest.raises(ConfigError, match="another version of configs/demo/source_object.yaml"):
        demo_sources.check_committed_sources(where, ["train.epochs=3"])  # other overrides, other identity
    with open(where / "scene.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ConfigError, match="scene.pt: its sha256 differs"):
        demo_sources.check_committed_sources(where)
    (where / "object.json").unlink()
    with pytest.raises(ConfigError, match="object-like source is missing; run `make demo-sources`"):
        demo_sources.check_committed_sources(where)


def test_demo_sources_export_then_verify(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo_sources, "SOURCES", {"object": demo_sources.SOURCES["object"]})
    overrides = ["train.epochs=1", "train.progress=false", "data.procedural.train_size=64",
                 "data.procedural.test_size=40", f"data.root={tmp_path / 'data'}", f"run.root={tmp_path / 'runs'}"]
    where = tmp_path / "sources"
    assert demo_sources.main([*overrides, "--where", str(where)]) == 0  # nothing committed yet: export
    assert "exported" in capsys.readouterr().out
    recorded = json.loads((where / "object.json").read_text())
    assert recorded["identity"] == demo_sources.identity(demo_sources.SOURCES["object"], overrides)
    assert set(recorded["held_out"]) == {"top1", "shape_top1"}
    assert demo_sources.main(["--check", *overrides, "--where", str(where)]) == 0
    assert demo_sources.main([*overrides, "--where", str(where)]) == 0  # same identity: retrain, verify
    assert "identical weights -> verified" in capsys.readouterr().out
