"""make reproduce: every cell x seed of a table as a command, finished ones skipped, SLURM scripts per cell."""
from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess

import pytest
import torch

from engine.config import load_config
from tools import reproduce, results, run_plan
from tools.tables import TableError, load_table, table_names
from tests.conftest import ROOT

TABLE = """
title: test table
metric: test/top1
columns: [A, B]
rows:
  - label: first
    cells:
      A: {{config: {tiny}, paper: 90.0, pm: 0.5}}
      B: {{config: {tiny}, overrides: [model.head=linear, "sources.0.resize={{scale: 2.0}}"], run: tbl/first_b}}
  - label: second
    cells:
      A: {{config: configs/nowhere/not_yet.yaml, paper: 80.0}}
"""


@pytest.fixture
def table_file(tmp_path, tiny_config):
    path = tmp_path / "tbl.yaml"
    path.write_text(TABLE.format(tiny=tiny_config))
    return path


def printed_commands(out: str) -> list[list[str]]:
    return [shlex.split(line) for line in out.splitlines() if not line.startswith("#")]


def test_dry_run_lists_every_cell_and_seed_and_skips_finished(table_file, tmp_path, tiny_config, capsys):
    runs = tmp_path / "runs"
    (runs / "tiny" / "seed1").mkdir(parents=True)
    (runs / "tiny" / "seed1" / "summary.json").write_text("{}")  # finished: skipped
    (runs / "tbl" / "first_b" / "seed0" / "checkpoints" / "last").mkdir(parents=True)  # interrupted: resumed

    assert reproduce.main(["--table", str(table_file), "--seeds", "3", "--runs", str(runs), "--dry-run",
                           "train.progress=false"]) == 0
    out = capsys.readouterr().out
    commands = printed_commands(out)
    expected = {(str(tiny_config), seed, ()) for seed in (0, 2)} | \
               {(str(tiny_config), seed, ("model.head=linear", "sources.0.resize={scale: 2.0}", "run.name=tbl/first_b"))
                for seed in (0, 1, 2)}
    found = set()
    for cmd in commands:
        assert cmd[1:3] == ["-m", "engine.train"] and cmd[3] == "--config"
        assert cmd[-2:] == [f"run.root={runs}", "train.progress=false"]  # the runs root, then the extra overrides
        found.add((cmd[4], int(cmd[5].removeprefix("seed=")), tuple(cmd[6:-2])))
    assert found == expected and len(commands) == 5
    assert "first / A seed 1: done" in out
    assert "first / B seed 0: resuming" in out
    assert out.count("configs/nowhere/not_yet.yaml does not exist yet") == 3  # once per seed
    assert "configs that do not exist yet (1): configs/nowhere/not_yet.yaml" in out
    assert "9 cell x seed runs: 1 done, 0 stale, 1 resume, 4 new, 3 missing config" in out


def test_seeds_are_a_count_a_list_or_ranges(capsys):
    assert reproduce.seed_list(["3"]) == [0, 1, 2]
    assert reproduce.seed_list(["3", "7"]) == [3, 7]
    assert reproduce.seed_list(["4-4"]) == [4]  # one seed other than 0
    assert reproduce.seed_list(["0-2", "5", "1"]) == [0, 1, 2, 5]
    assert reproduce.seed_list(["0-0"]) == [0] and reproduce.seed_list(["0", "4"]) == [0, 4]
    with pytest.raises(ValueError, match=r"0 seeds selected \(N means seeds 0..N-1; seed 0 alone is 0-0\)"):
        reproduce.seed_list(["0"])  # a count of none would run nothing
    for bad in (["2-1"], ["x"], ["1-"], ["-1"]):
        with pytest.raises(ValueError, match="--seeds"):
            reproduce.seed_list(bad)
    with pytest.raises(SystemExit) as exit:  # through argparse: a one-line usage error
        reproduce.main(["--table", "demo", "--seeds", "3-1", "--dry-run"])
    assert exit.value.code == 2 and "--seeds: '3-1' is neither a seed nor a range" in capsys.readouterr().err


def test_runs_one_after_another_then_skips(table_file, tmp_path, capsys):
    runs = reproduce.trial_root(tmp_path / "runs", ["train.epochs=1"])  # a trial: a runs root of its own
    assert runs.parent == tmp_path / "runs" and runs.name.startswith("trial-")
    (runs / "tiny" / "seed0").mkdir(parents=True)  # cell A finished earlier: skipped, still in the table
    earlier = {"final": {"test/top1": 12.5}, "best": {"test/top1": 13.0, "epoch": 1}}  # no metrics.jsonl
    (runs / "tiny" / "seed0" / "summary.json").write_text(json.dumps(earlier))
    # The missing config makes the status 1, after the runnable cell ran.
    assert reproduce.main(["--table", str(table_file), "--seeds", "1", "--runs", str(tmp_path / "runs"),
                           "train.epochs=1"]) == 1
    summary = json.loads((runs / "tbl/first_b/seed0/summary.json").read_text())
    assert summary["epochs"] == 1 and summary["seed"] == 0 and summary["head"] == "linear"
    assert json.loads((runs / "tiny/seed0/summary.json").read_text()) == earlier
    capsys.readouterr()
    reproduce.main(["--table", str(table_file), "--seeds", "1", "--runs", str(tmp_path / "runs"), "--dry-run",
                    "train.epochs=1"])
    assert printed_commands(capsys.readouterr().out) == []  # nothing left to run

    # make results reads what the engine wrote
    written = results.write_results(load_table(str(table_file)), runs, tmp_path / "results", extra=("train.epochs=1",))
    table = written["markdown"].read_text()
    first = next(line for line in table.splitlines() if line.startswith("| first |"))
    assert first.startswith("| first | top-1 % | 12.50 (1 seed) | 13.00 (1 seed) | 90 ± 0.5 | ")
    assert f"| {summary['final']['test/top1']:.2f} (1 seed) |" in first
    assert "| second | top-1 % | missing | missing | 80 |" in table
    assert set(written) >= {"csv", "bars", "curves first"}


def test_a_run_made_with_other_settings_is_never_reused(table_file, tiny_config, tmp_path, capsys):
    """The config changed after a cell ran: results leave the old run out, reproduce sets it aside and reruns."""
    args = ["--table", str(table_file), "--seeds", "1", "--runs", str(tmp_path / "runs"), "--cells", "first/B",
            "train.epochs=1"]
    runs = reproduce.trial_root(tmp_path / "runs", ["train.epochs=1"])
    run = runs / "tbl/first_b/seed0"
    assert reproduce.main(args) == 0 and (run / "summary.json").exists()
    tiny_config.write_text(tiny_config.read_text().replace("lr: 0.05", "lr: 0.02"))
    capsys.readouterr()

    with pytest.raises(results.KeptResults, match="no finished run"):  # the only run is left out: no table
        results.write_results(load_table(str(table_file)), runs, tmp_path / "results", extra=("train.epochs=1",))
    assert f"warning: {run} was made with other settings (optim.lr=0.05 there, 0.02 now)" in capsys.readouterr().err

    assert reproduce.main([*args, "--dry-run"]) == 0
    assert (f"first / B seed 0: {run} was made with other settings (optim.lr=0.05 there, 0.02 now); would be set "
            "aside") in capsys.readouterr().out
    assert reproduce.main(args) == 0
    assert f"set aside as {run.with_name('seed0.stale-1')}" in capsys.readouterr().out
    assert (run.with_name("seed0.stale-1") / "summary.json").exists()  # kept, not deleted
    assert "lr: 0.02" in (run / "config.yaml").read_text() and (run / "summary.json").exists()


def test_a_run_whose_source_weights_changed_is_never_reused(table_file, source_checkpoint, tmp_path, capsys):
    """Same config, same weights path, other bytes in the file (a source retrained or re-downloaded in place):
    the finished run is stale for make reproduce, and engine.train trains it afresh in a new folder instead of
    treating it as finished."""
    from engine import train as train_module
    from engine.checkpoint import save_deployed
    from models.registry import build_target
    weights = tmp_path / "source.pt"
    shutil.copyfile(source_checkpoint, weights)
    extra = ["train.epochs=1", f"sources.0.weights={weights}"]
    args = ["--table", str(table_file), "--seeds", "1", "--runs", str(tmp_path / "runs"), "--cells", "first/B", *extra]
    run = reproduce.trial_root(tmp_path / "runs", extra) / "tbl/first_b/seed0"
    assert reproduce.main(args) == 0 and (run / "summary.json").exists()
    used = json.loads((run / "inputs.json").read_text())["sources"]
    assert used == {"object": {"weights": str(weights), "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}}
    assert reproduce.main([*args, "--dry-run"]) == 0
    assert "would be set aside" not in capsys.readouterr().out

    torch.manual_seed(7)  # the same network retrained: same path, same size, other bytes
    save_deployed(build_target("resnet8", 36).state_dict(), "resnet8", 36, weights)
    changed = f"source object: {weights} had sha256 {used['object']['sha256'][:12]} there, "
    assert reproduce.main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{run} was made with other settings ({changed}" in out
    command = next(c for c in printed_commands(out) if "engine.train" in " ".join(c))
    assert train_module.main(command[command.index("--config"):]) == 0  # never reused: a fresh folder beside it
    said = [line for line in capsys.readouterr().out.splitlines() if changed in line]
    assert len(said) == 1 and "this run goes to" in said[0] and json.loads((run / "summary.json").read_text())


def test_slurm_scripts_name_the_config_and_seeds(table_file, tmp_path, tiny_config):
    runs = tmp_path / "runs"
    (runs / "tiny" / "seed0").mkdir(parents=True)
    (runs / "tiny" / "seed0" / "summary.json").write_text("{}")
    out = tmp_path / "slurm"
    assert reproduce.main(["--table", str(table_file), "--seeds", "3", "--runs", str(runs), "--slurm",
                           "--slurm-dir", str(out), "--nodes", "2", "--gpus-per-node", "4"]) == 0
    scripts = {p.name: p.read_text() for p in out.glob("*.sbatch")}
    assert sorted(scripts) == ["first_a.sbatch", "first_b.sbatch"]  # the missing config gets none
    for name, seeds, extra in (("first_a.sbatch", "1,2", ""), ("first_b.sbatch", "0,1,2", "run.name=tbl/first_b")):
        text = scripts[name]
        assert f"#SBATCH --array={seeds}\n" in text and "#SBATCH --nodes=2\n" in text
        assert "#SBATCH --gpus-per-node=4\n" in text
        launch = text.strip().splitlines()[-1]
        assert launch.startswith("srun ") and " launch --multi_gpu --num_machines \"$SLURM_NNODES\"" in launch
        assert "--num_processes $((SLURM_NNODES * 4))" in launch and "--main_process_ip \"$HEAD_NODE\"" in launch
        assert f"-m engine.train --config {tiny_config} seed=\"$SEED\"" in launch and extra in launch
        assert "SEED=$SLURM_ARRAY_TASK_ID" in text
        assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0  # valid shell
    assert "'sources.0.resize={scale: 2.0}'" in scripts["first_b.sbatch"]  # quoted for the shell
    submit = (out / "submit.sh").read_text()
    assert submit.count("sbatch ") == 2


def test_single_node_script_launches_on_its_gpus(table_file, tmp_path):
    out = tmp_path / "slurm"
    reproduce.main(["--table", str(table_file), "--seeds", "1", "--runs", str(tmp_path / "runs"), "--slurm",
                    "--slurm-dir", str(out), "--gpus-per-node", "8"])
    launch = (out / "first_a.sbatch").read_text().strip().splitlines()[-1]
    assert re.search(r"accelerate launch --multi_gpu --main_process_port \$\(\(29500 \+ SLURM_JOB_ID % 10000\)\) "
                     r"--num_processes 8 -m "
                     r"engine.train", launch)
    assert "srun" not in launch and "#SBATCH --array=0\n" in (out / "first_a.sbatch").read_text()


def test_the_named_tables_load_and_reference_the_configs_by_name():
    assert {"comparison", "maxl", "demo"} <= set(table_names())
    comparison = load_table("comparison")
    rows = {row.label: row for row in comparison.rows}
    assert len(rows) == 13 and comparison.columns == ["KD", "DML", "SSKT"]
    assert rows["CIFAR-10 ResNet-20"].cells["SSKT"].paper == 92.46
    assert rows["VOC 2007 ResNet-18"].metric == "test/sample_ap"
    assert rows["UCF-101 3D ResNet-18 (scratch)"].cells["SSKT"].config == \
        "configs/ucf101/resnet3d_18_scratch_sskt_PI.yaml"
    for name in table_names():
        for row, column, cell in load_table(name).cells():
            assert re.fullmatch(r"configs/(cifar10|cifar100|stl10|voc|ucf101|hmdb51|demo)/\w[\w-]*\.yaml", cell.config)
            assert not cell.config.endswith("_sskt_PI.yaml") or (ROOT / cell.config).exists() or "3d" in cell.config


def test_every_existing_cell_config_takes_its_overrides():
    """A cell's overrides stay valid for its config (other changes to configs/ must not break a table)."""
    for name in table_names():
        for row, column, cell in load_table(name).cells():
            if (ROOT / cell.config).exists():
                cfg = load_config(ROOT / cell.config, run_plan.train_args(cell, 1, run_plan.DEFAULT_RUNS, [])[4:])
                assert cfg.seed == 1 and cfg.run.name == cell.run_name, (name, row.label, column)


def test_a_bad_table_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: t\nmetric: m\ncolumns: [A]\nrows: [{label: r, cells: {A: {config: c.yaml, "
                   "overrides: [x=1]}}}]\n")
    with pytest.raises(TableError, match="bad.yaml: .*needs its own `run` folder"):
        load_table(str(bad))
    with pytest.raises(TableError, match="no such table"):
        load_table("nonexistent")


def test_trials_get_their_own_runs_root():
    runs = reproduce.DEFAULT_RUNS
    assert reproduce.trial_root(runs, []) == runs
    assert reproduce.trial_root(runs, ["train.progress=false", "data.workers=0", "train.channels_last=false"]) == runs
    quick = reproduce.trial_root(runs, ["train.epochs=5"])
    assert quick.name.startswith("trial-") and quick == reproduce.trial_root(runs, ["train.progress=false", "train.epochs=5"])
    assert reproduce.trial_root(runs, ["train.epochs=6"]) != quick


def test_cells_select_by_column_row_or_both():
    demo = load_table("demo")
    labels = lambda *patterns: [j.label for j in reproduce.plan(demo, [0], cells=list(patterns)) if j.cell.run]
    assert labels("scratch") == ["none / scratch"]
    assert labels("linear heads/*") == [f"linear heads / SSKT {s}" for s in ("I", "P", "P+I")]
    assert labels("transfer modules / SSKT p+i", "DML") == ["none / DML", "transfer modules / SSKT P+I"]
    assert reproduce.main(["--table", "demo", "--cells", "nothing", "--dry-run"]) == 2


def test_an_override_after_cells_is_an_override_not_a_pattern(tmp_path, capsys):
    """`--cells scratch train.epochs=2` (no `--`): argparse hands the override to --cells."""
    runs = tmp_path / "runs"
    assert reproduce.main(["--table", "demo", "--seeds", "1", "--runs", str(runs), "--dry-run",
                           "--cells", "scratch", "train.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert reproduce.trial_root(runs, ["train.epochs=2"]).name in out and "train.epochs=2" in out
    assert "none / scratch" in out and "DML" not in out


KD_TABLE = """
title: kd
metric: test/top1
columns: [scratch, KD]
rows:
  - label: demo
    cells:
      scratch: {config: configs/demo/scratch.yaml}
      KD: {config: configs/demo/kd.yaml}
"""


def test_a_teacher_runs_first_once_and_in_the_same_runs_root(tmp_path, capsys):
    """configs/demo/kd.yaml reads runs/demo/kd_teacher/seed0/checkpoints/final.pt: configs/demo/kd_teacher.yaml
    seed 0 runs before the first KD seed, once, and KD reads it where that run writes it."""
    table = tmp_path / "kd.yaml"
    table.write_text(KD_TABLE)
    runs = tmp_path / "runs"
    assert reproduce.main(["--table", str(table), "--seeds", "2", "--runs", str(runs), "--dry-run"]) == 0
    out = capsys.readouterr().out
    commands = printed_commands(out)
    configs = [cmd[4] for cmd in commands]
    assert configs == ["configs/demo/scratch.yaml", "configs/demo/scratch.yaml", "configs/demo/kd_teacher.yaml",
                       "configs/demo/kd.yaml", "configs/demo/kd.yaml"]
    teacher = runs / "demo" / "kd_teacher" / "seed0" / "checkpoints" / "final.pt"
    assert commands[2][5] == "seed=0"
    for kd in commands[3:]:
        assert f"sources.0.weights={teacher}" in kd and f"run.root={runs}" in kd
    assert out.count(f"after prerequisite demo/kd_teacher seed 0, which writes {teacher}") == 2

    # Once the teacher's run is finished, KD needs nothing first.
    teacher.parent.mkdir(parents=True)
    teacher.write_bytes(b"weights")
    (teacher.parents[1] / "summary.json").write_text("{}")
    reproduce.main(["--table", str(table), "--seeds", "2", "--runs", str(runs), "--dry-run"])
    out = capsys.readouterr().out
    assert "prerequisite demo/kd_teacher seed 0: done" in out and "after" not in out


def test_a_cell_whose_checkpoint_is_missing_fails_in_one_line(tmp_path, tiny_config, capsys):
    """A source read from runs/ whose run no config makes: the cell is not started, one line says why."""
    config = tmp_path / "student.yaml"
    config.write_text(tiny_config.read_text().replace(
        next(line for line in tiny_config.read_text().splitlines() if "weights:" in line),
        "  - {name: object, format: checkpoint, arch: resnet8, weights: runs/nowhere/teacher/seed3/checkpoints/final.pt}"))
    table = tmp_path / "t.yaml"
    table.write_text(f"title: t\nmetric: test/top1\ncolumns: [KD]\nrows: [{{label: r, cells: {{KD: {{config: {config}}}}}}}]\n")
    runs = tmp_path / "runs"
    assert reproduce.main(["--table", str(table), "--seeds", "1", "--runs", str(runs)]) == 1
    captured = capsys.readouterr()
    assert "prerequisite nowhere/teacher seed 3: config configs/nowhere/teacher.yaml does not exist yet" in captured.out
    missing = [line for line in captured.err.splitlines() if "which is missing" in line]
    assert missing == [f"# r / KD seed 0: needs {runs}/nowhere/teacher/seed3/checkpoints/final.pt, which is missing "
                       f"(run {runs}/nowhere/teacher, seed3 first); not run"]
    assert not (runs / "student").exists()  # never started


def test_slurm_submits_a_cell_after_the_run_it_needs(tmp_path):
    table = tmp_path / "kd.yaml"
    table.write_text(KD_TABLE)
    out = tmp_path / "slurm"
    assert reproduce.main(["--table", str(table), "--seeds", "3", "--runs", str(tmp_path / "runs"), "--slurm",
                           "--slurm-dir", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.sbatch")) == ["cache_demo_kd_teacher.sbatch", "demo_kd.sbatch",
                                                             "demo_scratch.sbatch", "prerequisite_demo_kd_teacher.sbatch"]
    teacher = (out / "prerequisite_demo_kd_teacher.sbatch").read_text()
    assert "#SBATCH --array=0\n" in teacher and "configs/demo/kd_teacher.yaml" in teacher
    kd = (out / "demo_kd.sbatch").read_text()
    checkpoint = tmp_path / "runs" / "demo/kd_teacher/seed0/checkpoints/final.pt"
    assert f"test -f {checkpoint} || {{ echo" in kd and f"sources.0.weights={checkpoint}" in kd
    submit = (out / "submit.sh").read_text().splitlines()
    first = next(i for i, line in enumerate(submit) if "prerequisite_demo_kd_teacher.sbatch" in line)
    then = next(i for i, line in enumerate(submit) if "demo_kd.sbatch" in line)
    cache = next(i for i, line in enumerate(submit) if "cache_demo_kd_teacher.sbatch" in line)
    assert first < cache < then and submit[first].startswith("job_prerequisite_demo_kd_teacher=$(sbatch --parsable ")
    assert "--dependency=afterok:${job_prerequisite_demo_kd_teacher%%;*} " in submit[cache]  # the teacher's outputs
    assert ("--dependency=afterok:${job_cache_demo_kd_teacher%%;*}:${job_prerequisite_demo_kd_teacher%%;*} "
            in submit[then])
    assert "--dependency" not in next(line for line in submit if "demo_scratch.sbatch" in line)
    for script in (teacher, kd, "\n".join(submit)):
        assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0  # valid shell


def test_jobs_run_side_by_side_and_a_cell_waits_for_the_run_it_needs(tmp_path, capsys):
    """--jobs 3: both scratch seeds and the KD teacher start at once; KD starts only once the teacher has ended,
    on its checkpoint. Each run's output is in its folder's reproduce.log; one line here per run."""
    table = tmp_path / "kd.yaml"
    table.write_text(KD_TABLE)
    runs = tmp_path / "runs"
    tiny = ["train.epochs=1", "train.eval_every=1", "data.procedural={train_size: 64, test_size: 40}",
            f"data.root={tmp_path / 'data'}", f"source_cache.root={tmp_path / 'cache'}"]
    assert reproduce.main(["--table", str(table), "--seeds", "2", "--runs", str(runs), "--jobs", "3", *tiny]) == 0
    out = capsys.readouterr().out
    root = reproduce.trial_root(runs, tiny)
    teacher = root / "demo" / "kd_teacher" / "seed0"
    lines = out.splitlines()
    started = [i for i, line in enumerate(lines) if ": new run in " in line]
    finished = [line for line in lines if ": finished in " in line]
    assert started[2] < lines.index(finished[0])  # three at once
    order = [lines[i].split(":")[0] for i in started]  # the plan's first three, then KD once its teacher has ended
    assert set(order[:3]) == {"# demo / scratch seed 0", "# demo / scratch seed 1",
                              "# prerequisite demo/kd_teacher seed 0"}  # (threads print in any order)
    assert set(order[3:]) == {"# demo / KD seed 0", "# demo / KD seed 1"}
    assert len(finished) == 5 and "prerequisite demo/kd_teacher seed 0" in finished[0] + finished[1] + finished[2]
    for seed in (0, 1):
        kd = root / "demo" / "kd" / f"seed{seed}"
        assert (kd / "summary.json").exists() and "epoch 1/1" in (kd / "reproduce.log").read_text()
        assert (kd / "config.yaml").stat().st_mtime >= (teacher / "summary.json").stat().st_mtime
        assert (root / "demo" / "scratch" / f"seed{seed}" / "summary.json").exists()
    # all done: a second pass runs nothing
    assert reproduce.main(["--table", str(table), "--seeds", "2", "--runs", str(runs), "--jobs", "3", *tiny]) == 0
    assert ": finished in " not in capsys.readouterr().out


def test_jobs_share_the_threads_and_take_the_visible_gpus_in_turn(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(reproduce.os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    gpus = reproduce.visible_gpus()
    assert gpus == ["3", "5"]
    envs = [reproduce.slot_env(slot, 4, gpus) for slot in range(4)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["3", "5", "3", "5"]
    assert {e["OMP_NUM_THREADS"] for e in envs} == {"4"}
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a count the user set is kept
    assert reproduce.slot_env(0, 4, ["0"])["OMP_NUM_THREADS"] == "2"
    assert reproduce.slot_env(1, 4, ["3"])["CUDA_VISIBLE_DEVICES"] == "3,5"  # one GPU: shared, the variable kept


def test_jobs_are_one_or_more_and_not_with_several_processes_per_run(tmp_path, capsys):
    for bad in (["--jobs", "0"], ["--jobs", "2", "--nproc", "2"]):
        with pytest.raises(SystemExit):
            reproduce.main(["--table", "demo", *bad, "--dry-run"])
        assert "--jobs" in capsys.readouterr().err
