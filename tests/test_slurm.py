"""make reproduce SLURM=1: each cell's own resources (table, row, cell, command line), the cluster options, and one
job per distinct source cache that the cells reading it wait for."""
from __future__ import annotations

import re
import subprocess

import h5py
import pytest

from tools import cache_sources, reproduce
from tools.tables import TableError, load_table, time_hours

TWO_SOURCES = """
  - {{name: object, format: checkpoint, arch: resnet8, weights: {weights}, resize: {{scale: 1.5}}}}
  - {{name: twin, format: checkpoint, arch: resnet8, weights: {weights}, resize: {{scale: 1.5}}}}
"""
TABLE = """
title: resources
metric: test/top1
columns: [A, B, C]
resources: {{gpus: 2, time: "4:00:00"}}
rows:
  - label: small
    cells:
      A: {{config: {cfg}, overrides: [model.head=linear], run: r/a}}
  - label: big
    resources: {{nodes: 2, gpus: 4, memory: 64G}}
    cells:
      B: {{config: {cfg}, overrides: [sources.1.cache=off], run: r/b}}
      C: {{config: {cfg}, run: r/c, resources: {{time: "1-12:00:00", cpus: 12}}}}
"""


@pytest.fixture
def table(tmp_path, tiny_config, source_checkpoint):
    """Three cells of one config with two cached sources: A and C read both caches, B only the first."""
    text = tiny_config.read_text()
    sources = text[text.index("sources:\n") + len("sources:\n"):text.index("method:")]
    config = tmp_path / "two.yaml"
    config.write_text(text.replace(sources, TWO_SOURCES.lstrip("\n").format(weights=source_checkpoint))
                      .replace("procedural: {label: shape", "views: 2\n  procedural: {label: shape"))
    path = tmp_path / "resources.yaml"
    path.write_text(TABLE.format(cfg=config))
    return path


def sbatch(text: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", text, flags=re.M))


def test_each_cell_asks_for_its_own_resources_and_waits_for_its_caches(table, tmp_path):
    out = tmp_path / "slurm"
    assert reproduce.main(["--table", str(table), "--seeds", "2", "--runs", str(tmp_path / "runs"), "--slurm",
                           "--slurm-dir", str(out), "--account", "proj7", "--partition", "gpu",
                           "--setup", "module load cuda && source env/bin/activate"]) == 0
    scripts = {p.name: p.read_text() for p in out.glob("*.sbatch")}
    assert sorted(scripts) == ["big_b.sbatch", "big_c.sbatch", "cache_r_a_object.sbatch", "cache_r_a_twin.sbatch",
                               "small_a.sbatch"]
    a, b, c = (sbatch(scripts[f"{name}.sbatch"]) for name in ("small_a", "big_b", "big_c"))
    assert (a["nodes"], a["gpus-per-node"], a["cpus-per-task"], a["time"]) == ("1", "2", "16", "4:00:00")
    assert "mem" not in a  # the cluster's default
    keys = ("nodes", "gpus-per-node", "cpus-per-task", "time", "mem")
    assert [b[k] for k in keys] == ["2", "4", "32", "4:00:00", "64G"]  # 8 CPUs per GPU
    assert [c[k] for k in keys] == ["2", "4", "12", "1-12:00:00", "64G"]
    for text in scripts.values():
        assert sbatch(text)["account"] == "proj7" and sbatch(text)["partition"] == "gpu"
        assert "\nmodule load cuda && source env/bin/activate\n" in text
        assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0  # valid shell
    assert "--num_processes 2 -m engine.train" in scripts["small_a.sbatch"]
    assert "--num_processes $((SLURM_NNODES * 4))" in scripts["big_b.sbatch"]

    # One job per distinct cache (A, B and C read the same `object` cache; A and C the `twin` one), on one node
    # with the first reading cell's GPUs, building only its own source.
    cache = scripts["cache_r_a_object.sbatch"]
    assert (sbatch(cache)["nodes"], sbatch(cache)["gpus-per-node"]) == ("1", "2") and "--array" not in cache
    build = cache.strip().splitlines()[-1]
    assert "-m tools.cache_sources --config" in build and build.endswith("sources.1.cache=off")
    assert scripts["cache_r_a_twin.sbatch"].strip().endswith("sources.0.cache=off")
    submit = (out / "submit.sh").read_text().splitlines()
    line = {name: next(i for i, text in enumerate(submit) if f"/{name}.sbatch" in text) for name in
            ("cache_r_a_object", "cache_r_a_twin", "small_a", "big_b", "big_c")}
    both = "--dependency=afterok:${job_cache_r_a_object%%;*}:${job_cache_r_a_twin%%;*} "
    assert both in submit[line["small_a"]] and both in submit[line["big_c"]]
    assert "--dependency=afterok:${job_cache_r_a_object%%;*} " in submit[line["big_b"]]  # its twin is live
    assert line["cache_r_a_object"] < line["small_a"] and line["cache_r_a_twin"] < line["small_a"]
    assert "--dependency" not in submit[line["cache_r_a_object"]]

    # The cache job's command builds that one cache (and a second run of it keeps it).
    args = build[build.index("--config"):].split()
    assert cache_sources.main(args) == 0
    built = list((tmp_path / "source_cache").glob("*.h5"))
    assert [p.name.split("-")[0] for p in built] == ["object"]
    with h5py.File(built[0]) as f:
        assert f["outputs"].shape == (96, 2, 36)


def test_the_command_line_overrides_every_cells_resources(table, tmp_path):
    out = tmp_path / "slurm"
    assert reproduce.main(["--table", str(table), "--seeds", "1", "--runs", str(tmp_path / "runs"), "--slurm",
                           "--slurm-dir", str(out), "--gpus-per-node", "1", "--time", "30", "--mem", "8G"]) == 0
    for name in ("small_a", "big_b", "big_c", "cache_r_a_object"):
        found = sbatch((out / f"{name}.sbatch").read_text())
        assert (found["gpus-per-node"], found["time"], found["mem"]) == ("1", "30", "8G")
    assert sbatch((out / "big_c.sbatch").read_text())["nodes"] == "2"  # what it does not give stays the cell's


def test_resources_are_checked_when_the_table_loads(tmp_path, capsys):
    assert time_hours("90") == 1.5 and time_hours("2:30:00") == 2.5 and time_hours("1-12") == 36
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: t\nmetric: m\ncolumns: [A]\nrows: [{label: r, resources: {time: 2h}, "
                   "cells: {A: {config: c.yaml}}}]\n")
    with pytest.raises(TableError, match=r"bad.yaml: rows.0.resources.time: .*'2h' is not an sbatch time"):
        load_table(str(bad))
    with pytest.raises(SystemExit):
        reproduce.main(["--table", "demo", "--slurm", "--mem", "lots"])
    assert "memory 'lots' is not an sbatch --mem size" in capsys.readouterr().err
