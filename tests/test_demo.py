"""The embedded demo's table tool and its committed stand-in sources (tools/demo.py, tools/demo_sources.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engine.config import ConfigError, load_config
from tools import demo, demo_sources


def test_table_rows_are_valid_configs():
    table = demo.Table.load()
    assert table.baseline == "scratch" and table.rows[0].name == "scratch"
    slugs = [row.slug for row in table.rows]
    assert len(set(slugs)) == len(slugs) and "sskt_i_tm" in slugs
    for row in table.rows:
        cfg = load_config(row.config, [*row.overrides, "seed=2"])
        assert cfg.data.procedural["label"] == "shape" and cfg.train.epochs == 60 and cfg.seed == 2
    weights = {s.weights for row in table.rows for s in load_config(row.config, row.overrides).sources}
    assert weights == {f"configs/demo/sources/{name}.pt" for name in demo_sources.SOURCES}


def test_bad_table_is_one_line_and_status_2(tmp_path, capsys):
    bad = tmp_path / "table.yaml"
    bad.write_text("rows:\n  - {name: scratch, configs: configs/demo/scratch.yaml}\n")
    assert demo.main(["--table", str(bad)]) == 2
    assert "rows.0" in capsys.readouterr().err


def test_rows_select_in_table_order_and_unknown_is_one_line(capsys):
    table = demo.Table.load()
    picked = table.select(["SSKT I, linear", "scratch"])
    assert [r.name for r in picked.rows] == ["scratch", "SSKT I, linear"] and picked.baseline == "scratch"
    assert demo.main(["--rows", "scratch", "SSKT X", "--seeds", "0"]) == 2
    assert "--rows: 'SSKT X' is not a row" in capsys.readouterr().err


def test_trials_get_their_own_folder():
    assert demo.runs_folder([]) == "demo/table"
    assert demo.runs_folder(["train.progress=false", "data.workers=0"]) == "demo/table"  # same computation
    quick = demo.runs_folder(["train.epochs=5"])
    assert quick.startswith("demo/trial-") and quick == demo.runs_folder(["train.progress=false", "train.epochs=5"])
    assert demo.runs_folder(["train.epochs=6"]) != quick


def test_markdown_table_mean_std_and_one_seed():
    results = {"scratch": [80.0, 82.0, 84.0], "SSKT I, TM": [85.0, 86.5, 88.0]}
    text = demo.markdown_table(results, "scratch")
    assert "mean ± std over 3 seeds" in text
    assert f"| SSKT I, TM | 86.5 ± {np.std([85.0, 86.5, 88.0], ddof=1):.1f} | +4.5 |" in text
    assert "| scratch | 82.0 ± 2.0 |  |" in text
    single = demo.markdown_table({"scratch": [80.0], "SSKT I, TM": [83.25]}, "scratch")
    assert "(1 seed)" in single and "±" not in single and "| SSKT I, TM | 83.2 | +3.2 |" in single


def test_table_runs_every_row_and_seed_with_the_overrides(tmp_path):
    table = demo.Table([demo.Row("scratch", "configs/demo/scratch.yaml"),
                        demo.Row("SSKT I, linear", "configs/demo/sskt.yaml", ["model.head=linear"])], "scratch")
    extra = ["train.epochs=1", "train.progress=false", "data.procedural.train_size=64",
             "data.procedural.test_size=32", f"data.root={tmp_path / 'data'}", f"run.root={tmp_path / 'runs'}",
             f"source_cache.root={tmp_path / 'cache'}"]
    results = demo.run_all(table, [0, 1], extra)
    assert list(results) == ["scratch", "SSKT I, linear"] and all(len(v) == 2 for v in results.values())
    folder = tmp_path / "runs" / demo.runs_folder(extra)
    for slug in ("scratch", "sskt_i_linear"):
        for seed in (0, 1):
            summary = json.loads((folder / slug / f"seed{seed}" / "summary.json").read_text())
            assert summary["epochs"] == 1 and summary["seed"] == seed
    assert json.loads((folder / "sskt_i_linear/seed0/summary.json").read_text())["head"] == "linear"


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
