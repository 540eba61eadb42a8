"""Run every cell x seed of a named table (tables/<name>.yaml), each as its own run folder.

    python -m tools.reproduce --table comparison --seeds 3                (make reproduce TABLE=comparison SEEDS=3)
    python -m tools.reproduce --table demo --seeds 3 --dry-run            (PRINT=1: the commands, and what is done)
    python -m tools.reproduce --table comparison --seeds 3 --nproc 4      (NPROC=4: each run on 4 GPUs)
    python -m tools.reproduce --table comparison --seeds 3 --slurm --nodes 2 --gpus-per-node 4   (SLURM=1)

`--seeds N` means seeds 0..N-1; several values are the seeds themselves (`--seeds 3 7`).
Runs go one after another, each `python -m engine.train --config C seed=S [cell overrides]
[extra overrides]` (under `accelerate launch` with --nproc > 1). A seed whose summary.json
exists is skipped; an interrupted one is started again and the engine resumes it. A config
that does not exist yet is reported, not run; a failed run does not stop the others.
--slurm writes one sbatch script per cell, an array job over its unfinished seeds
(task id = seed), that runs `accelerate launch` across the allotted GPUs and nodes, and a
submit.sh that submits them all.
"""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tools.tables import Cell, Row, Table, TableError, load_table, table_names

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = Path("runs")
PORT = 29500


@dataclass(frozen=True)
class Job:
    """One cell x seed."""
    row: Row
    column: str
    cell: Cell
    seed: int
    run_dir: Path

    @property
    def status(self) -> str:
        if not (ROOT / self.cell.config).exists() and not Path(self.cell.config).exists():
            return "missing config"
        if (self.run_dir / "summary.json").exists():
            return "done"
        if (self.run_dir / "checkpoints" / "last").exists():
            return "resume"
        return "new"


def seed_list(values: list[int]) -> list[int]:
    return list(range(values[0])) if len(values) == 1 else list(values)


def plan(table: Table, seeds: list[int], runs_root: Path = DEFAULT_RUNS) -> list[Job]:
    """Every cell x seed in reading order; a run folder that two cells share is listed once."""
    jobs, seen = [], set()
    for row, column, cell in table.cells():
        for seed in seeds:
            run_dir = cell.run_dir(runs_root, seed)
            if run_dir not in seen:
                seen.add(run_dir)
                jobs.append(Job(row, column, cell, seed, run_dir))
    return jobs


def train_args(cell: Cell, seed: int | str, runs_root: Path, extra: list[str]) -> list[str]:
    """engine.train's arguments for a cell: config, seed, the cell's overrides, its folder, then `extra`."""
    args = ["-m", "engine.train", "--config", cell.config, f"seed={seed}", *cell.overrides]
    if cell.run:
        args.append(f"run.name={cell.run}")
    if Path(runs_root) != DEFAULT_RUNS:
        args.append(f"run.root={runs_root}")
    return [*args, *extra]


def executable(name: str, base: Path | None = None) -> str:
    """The venv's python / accelerate, relative to `base` (default: the working directory) when under it."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        return name
    try:
        return str(path.relative_to(base or Path.cwd()))
    except ValueError:
        return str(path)


def launcher(nproc: int) -> list[str]:
    if nproc == 1:
        return [executable(Path(sys.executable).name)]
    return [executable("accelerate"), "launch", "--multi_gpu", "--num_processes", str(nproc)]


def command(job: Job, nproc: int, runs_root: Path, extra: list[str]) -> list[str]:
    return [*launcher(nproc), *train_args(job.cell, job.seed, runs_root, extra)]


def describe(job: Job) -> str:
    return f"{job.row.label} / {job.column} seed {job.seed}"


# ---------------------------------------------------------------- running here

def run_all(jobs: list[Job], nproc: int, runs_root: Path, extra: list[str], dry_run: bool) -> int:
    failed, missing = [], sorted({j.cell.config for j in jobs if j.status == "missing config"})
    for job in jobs:
        status = job.status
        cmd = command(job, nproc, runs_root, extra)
        if status == "missing config":
            print(f"# {describe(job)}: config {job.cell.config} does not exist yet; not run")
            continue
        if status == "done":
            print(f"# {describe(job)}: done ({job.run_dir / 'summary.json'}); skipped")
            continue
        print(f"# {describe(job)}: {'resuming' if status == 'resume' else 'new run'} in {job.run_dir}", flush=True)
        print(shlex.join(cmd), flush=True)
        if dry_run:
            continue
        if subprocess.run(cmd, cwd=Path.cwd()).returncode != 0:
            failed.append(describe(job))
    counts = {s: sum(j.status == s for j in jobs) for s in ("done", "resume", "new", "missing config")}
    print(f"# {len(jobs)} cell x seed runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if missing:
        print(f"# configs that do not exist yet ({len(missing)}): {' '.join(missing)}")
    if failed:
        print(f"# failed ({len(failed)}): {'; '.join(failed)}", file=sys.stderr)
    return 1 if failed or (missing and not dry_run) else 0


# ---------------------------------------------------------------- SLURM

def slurm_script(table: Table, row: Row, column: str, cell: Cell, seeds: list[int], runs_root: Path,
                 extra: list[str], nodes: int, gpus_per_node: int, cpus_per_task: int, time_limit: str,
                 partition: str | None, log_dir: Path) -> str:
    """An sbatch array job over `seeds` (array task id = seed) running the cell under accelerate launch."""
    train = shlex.join(train_args(cell, "SEED", runs_root, extra)).replace("seed=SEED", 'seed="$SEED"')
    accelerate = shlex.quote(executable("accelerate", ROOT))
    # Array tasks of one cell may share a node: each rendezvous on its own port.
    port = f"--main_process_port $(({PORT} + SLURM_JOB_ID % 10000))"
    if nodes == 1:
        multi = f"--multi_gpu {port} " if gpus_per_node > 1 else ""
        launch = f"{accelerate} launch {multi}--num_processes {gpus_per_node}"
    else:  # one task per node; c10d rendezvous on the first node gives each machine its rank
        launch = (f"srun --ntasks-per-node=1 {accelerate} launch --multi_gpu "
                  f"--num_machines \"$SLURM_NNODES\" --num_processes $((SLURM_NNODES * {gpus_per_node})) "
                  f"--rdzv_backend c10d --main_process_ip \"$HEAD_NODE\" {port}")
    paper = f"paper {cell.paper}" + (f" ± {cell.pm}" if cell.pm is not None else "") if cell.paper is not None else "no paper number"
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={slug(f'sskt-{table.name}-{row.label}-{column}')}",
        f"#SBATCH --array={','.join(map(str, seeds))}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"#SBATCH --cpus-per-task={cpus_per_task}",
        f"#SBATCH --time={time_limit}",
        f"#SBATCH --output={log_dir}/%x-seed%a-%j.out",
        *([f"#SBATCH --partition={partition}"] if partition else []),
        f"# {table.name}: {row.label} / {column}: {cell.config} ({paper}); the array task id is the seed.",
        "# Data, weights and source caches are read from the paths in the config (a shared file system);",
        "# the first job to need a source cache builds it under a file lock, the others wait and reuse it.",
        "set -euo pipefail",
        f"cd {shlex.quote(str(ROOT))}",
        "SEED=$SLURM_ARRAY_TASK_ID",
        *(['HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'] if nodes > 1 else []),
        f"{launch} {train}",
    ]
    return "\n".join(lines) + "\n"


def write_slurm(table: Table, jobs: list[Job], out_dir: Path, runs_root: Path, extra: list[str], **resources) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = (out_dir / "logs").resolve()
    by_cell: dict[int, list[Job]] = {}
    for job in jobs:
        by_cell.setdefault(id(job.cell), []).append(job)
    scripts = []
    for cell_jobs in by_cell.values():
        first = cell_jobs[0]
        todo = [j.seed for j in cell_jobs if j.status in ("new", "resume")]
        if first.status == "missing config":
            print(f"# {first.row.label} / {first.column}: config {first.cell.config} does not exist yet; no script")
            continue
        if not todo:
            print(f"# {first.row.label} / {first.column}: every seed done; no script")
            continue
        path = out_dir / f"{slug(f'{first.row.label}-{first.column}')}.sbatch"
        path.write_text(slurm_script(table, first.row, first.column, first.cell, todo, runs_root, extra,
                                     log_dir=log_dir, **resources))
        scripts.append(path)
        print(f"{path}: {first.cell.config}, seeds {todo}")
    submit = out_dir / "submit.sh"
    submit.write_text("#!/bin/bash\n# Submits every cell of the table (one array job per cell).\nset -euo pipefail\n"
                      f"mkdir -p {shlex.quote(str(log_dir))}\n"
                      + "".join(f"sbatch {shlex.quote(str(p.resolve()))}\n" for p in scripts))
    submit.chmod(0o755)
    print(f"{submit}: submits the {len(scripts)} scripts (bash {submit})")
    return scripts


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9+]+", "_", text).strip("_").lower().replace("+", "")


# ---------------------------------------------------------------- entry point

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, help=f"a table name ({', '.join(table_names())}) or a YAML path")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3], help="N (seeds 0..N-1) or the seeds themselves")
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="runs root (run.root), default runs/")
    parser.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per run, under accelerate launch")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and what is done; run nothing")
    parser.add_argument("--slurm", action="store_true", help="write sbatch scripts instead of running")
    parser.add_argument("--slurm-dir", type=Path, help="where the scripts go (default slurm/<table>/)")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=1)
    parser.add_argument("--cpus-per-task", type=int, default=16)
    parser.add_argument("--time", default="24:00:00", help="sbatch --time")
    parser.add_argument("--partition")
    parser.add_argument("overrides", nargs="*", help="applied to every run after the cell's own, e.g. train.epochs=2")
    args = parser.parse_args(argv)
    try:
        table = load_table(args.table)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    jobs = plan(table, seed_list(args.seeds), args.runs)
    if args.slurm:
        write_slurm(table, jobs, args.slurm_dir or Path("slurm") / table.name, args.runs, args.overrides,
                    nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                    time_limit=args.time, partition=args.partition)
        return 0
    return run_all(jobs, args.nproc, args.runs, args.overrides, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
