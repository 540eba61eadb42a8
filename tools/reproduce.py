"""Run every cell x seed of a named table (tables/<name>.yaml), each as its own run folder.

    python -m tools.reproduce --table comparison --seeds 3                (make reproduce TABLE=comparison SEEDS=3)
    python -m tools.reproduce --table demo --seeds 3 --dry-run            (PRINT=1: missing inputs, commands, cost)
    python -m tools.reproduce --table comparison --seeds 3 --nproc 4      (NPROC=4: each run on 4 GPUs)
    python -m tools.reproduce --table demo --seeds 3 --jobs 2             (JOBS=2: two runs at a time)
    python -m tools.reproduce --table comparison --seeds 3 --slurm --account A --partition P   (SLURM=1)

`--seeds N` means seeds 0..N-1; several values are the seeds themselves (`--seeds 3 7`), and
`a-b` a range (`--seeds 3-4`; one seed k: `--seeds k-k`).
`--cells` keeps the cells matching a pattern: a column, a row's label or "row / column",
shell wildcards allowed (`--cells KD "linear heads/*"`).
Runs go one after another, each `python -m engine.train --config C seed=S [cell overrides]
[extra overrides]` (under `accelerate launch` with --nproc > 1), or `--jobs N` at a time (JOBS=N),
each on its share of the threads and, with several GPUs visible, on one GPU in turn. A seed whose summary.json
exists is skipped and an interrupted one started again (the engine resumes it), unless its run
was made with other settings than the cell's now (its config.yaml differs: the config or an
override changed since; or a source's weight file holds other bytes than its inputs.json says):
that one is set aside as seed<k>.stale-<n> (kept, not deleted) and run again. A config that
does not exist yet is reported, not run; a failed run does not stop the others.

Extra overrides that change what a run computes (a quick `train.epochs=5`; anything but
engine.config.neutral_keys) send the whole table to its own runs root, runs/trial-<hash>/, so a later full
table never resumes a trial (tools/results.py finds it from the same overrides).

Prerequisites follow from the configs: a source whose weights lie under runs/
(`runs/<name>/seed<k>/checkpoints/final.pt`, a KD teacher) is made by the run of
configs/<name>.yaml with seed k, which is planned (once) before the first cell that needs it,
in the same runs root. A cell whose needed checkpoint is missing when it starts fails in one
line and is not run.

Before anything starts, every run's inputs are checked (tools/run_inputs.py: the engine's own readers,
each distinct data set and weight file once): the missing ones are listed, grouped, with where each
comes from. A local run first downloads what its configs fetch themselves (data.download, torchvision
and Places365 weights), then skips the runs whose inputs are still missing; --dry-run and --slurm only
list them (--fetch downloads first there too).

--dry-run and --slurm also print the plan's device hours from `make bench`'s figures
(tools/run_cost.py: measured, an upper bound, or no figure, per run).

--slurm writes sbatch scripts (tools/slurm.py): one per cell (and per prerequisite), an array job over
its unfinished seeds (task id = seed) with that cell's resources (tables/*.yaml: table, row, cell;
--nodes, --gpus-per-node, --time, ... override them); one per distinct source-output cache the runs
read (tools/cache_sources.py); and a submit.sh that submits them all, each after the jobs it needs
(`--dependency=afterok:`).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from engine.config import ConfigError
from tools import run_cost
from tools.run_inputs import InputCheck, MissingInput
from tools.run_plan import (DEFAULT_RUNS, ROOT, Job, describe, maker_of, missing_checkpoint, plan, source_caches,
                            trial_root)
from tools.tables import Resources, TableError, load_table, table_names, time_hours


def set_aside(run_dir: Path) -> Path:
    """Move a stale run out of the way (kept, never deleted): <run_dir>.stale-<n>."""
    n = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.stale-{n}")).exists():
        n += 1
    run_dir.rename(aside)
    return aside


def seed_list(values: list[str]) -> list[int]:
    """--seeds, for every tool that runs or reads seeds: one number N means seeds 0..N-1; otherwise (or
    whenever a value is a range a-b, inclusive: `3-4`; a single seed k is `k-k`) the seeds themselves."""
    if len(values) == 1 and values[0].isdigit():
        if int(values[0]) == 0:  # a count of none: seed 0 alone is a range
            raise ValueError("--seeds: 0 seeds selected (N means seeds 0..N-1; seed 0 alone is 0-0)")
        return list(range(int(values[0])))
    seeds = []
    for value in values:
        first, dash, last = value.partition("-")
        if not first.isdigit() or (dash and not (last.isdigit() and int(last) >= int(first))):
            raise ValueError(f"--seeds: {value!r} is neither a seed nor a range a-b with a <= b")
        seeds += range(int(first), int(last if dash else first) + 1)
    return list(dict.fromkeys(seeds))  # in order, each once


class SeedsAction(argparse.Action):
    """`--seeds ...` parsed by seed_list; a bad value is the parser's one-line usage error."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            setattr(namespace, self.dest, seed_list(values))
        except ValueError as e:
            parser.error(str(e))


def add_seeds_argument(parser: argparse.ArgumentParser, default: list[int] | None, help: str) -> None:
    parser.add_argument("--seeds", nargs="+", action=SeedsAction, default=default, metavar="SEED",
                        help=f"{help}: N (seeds 0..N-1), the seeds themselves, or ranges a-b (one seed k: k-k)")


# ---------------------------------------------------------------- what the plan reads, and builds first

def missing_inputs(jobs: list[Job], check: InputCheck) -> dict[Path, list[MissingInput]]:
    """Run folder -> the inputs its job cannot read, for every job that would train; each distinct input is
    read once (tools.run_inputs), a checkpoint another job of the plan writes is not an input."""
    missing = {}
    for job in jobs:
        if not job.todo:
            continue
        try:
            cfg = job.config()
        except (ConfigError, OSError) as e:  # reported again when the job would start
            missing[job.run_dir] = [MissingInput("config", str(e))]
            continue
        found = check.missing(cfg, lambda path: maker_of(path, jobs) is not None)
        if found:
            missing[job.run_dir] = found
    return missing


def print_missing_inputs(jobs: list[Job], missing: dict[Path, list[MissingInput]]) -> None:
    """Every missing input once, grouped by kind, with where it comes from and the cells that read it."""
    readers: dict[MissingInput, list[Job]] = {}
    for job in jobs:
        for item in missing.get(job.run_dir, []):
            readers.setdefault(item, []).append(job)
    if not readers:
        return
    print(f"# inputs missing ({len(readers)}), read by {len(missing)} of the {sum(j.todo for j in jobs)} runs "
          "to do:")
    for kind in dict.fromkeys(item.kind for item in readers):
        print(f"# {kind}:")
        for item, jobs_reading in readers.items():
            if item.kind == kind:
                cells = list(dict.fromkeys(job.label for job in jobs_reading))
                shown = ", ".join(cells[:4]) + (f" and {len(cells) - 4} more" if len(cells) > 4 else "")
                print(f"#   {item.text()}")
                print(f"#     read by {len(jobs_reading)} run(s): {shown}")


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


def command(job: Job, nproc: int) -> list[str]:
    return [*launcher(nproc), *job.train_args()]


# ---------------------------------------------------------------- running here

def run_all(jobs: list[Job], nproc: int, dry_run: bool, parallel: int = 1,
            missing: dict[Path, list[MissingInput]] | None = None) -> int:
    """Run (or with `dry_run`, print) every job; a job whose inputs are `missing` is not run."""
    missing = missing or {}
    failed, no_config = [], sorted({j.cell.config for j in jobs if j.status == "missing config"})
    if parallel > 1 and not dry_run:
        run_side_by_side(jobs, nproc, parallel, failed, missing)
    else:
        for job in jobs:
            cmd = prepare(job, jobs, nproc, dry_run, failed, missing)
            if cmd and not dry_run and subprocess.run(cmd, cwd=Path.cwd()).returncode != 0:
                failed.append(describe(job))
    counts = {s: sum(j.status == s for j in jobs) for s in ("done", "stale", "resume", "new", "missing config")}
    print(f"# {len(jobs)} cell x seed runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
          + (f"; {len(missing)} cannot start: inputs missing (listed first)" if missing else ""))
    if no_config:
        print(f"# configs that do not exist yet ({len(no_config)}): {' '.join(no_config)}")
    if failed:
        print(f"# failed or not run ({len(failed)}): {'; '.join(failed)}", file=sys.stderr)
    return 1 if failed or ((no_config or missing) and not dry_run) else 0


def prepare(job: Job, jobs: list[Job], nproc: int, dry_run: bool, failed: list[str],
            missing: dict[Path, list[MissingInput]]) -> list[str] | None:
    """Say what happens to `job` and get it ready: the command to run, or None when it is not run (done, no
    config yet, an input or a needed checkpoint missing: then it is in `failed`). A stale run is set aside here."""
    status = job.status
    cmd = command(job, nproc)
    if status == "missing config":
        print(f"# {describe(job)}: config {job.cell.config} does not exist yet; not run")
        return None
    if status == "done":
        print(f"# {describe(job)}: done ({job.run_dir / 'summary.json'}); skipped")
        return None
    if job.run_dir in missing and not dry_run:
        print(f"# {describe(job)}: inputs missing (listed first); not run", file=sys.stderr, flush=True)
        failed.append(describe(job))
        return None
    if status == "stale":
        why = "; ".join(job.changed_settings()[:3])
        if dry_run:
            print(f"# {describe(job)}: {job.run_dir} was made with other settings ({why}); would be set aside")
        else:
            print(f"# {describe(job)}: {job.run_dir} was made with other settings ({why}); set aside as "
                  f"{set_aside(job.run_dir)}", flush=True)
        status = "new"
    absent = [p for p in job.needs if not p.exists()]
    if dry_run:
        for path in absent:
            maker = maker_of(path, jobs)
            print(f"# {describe(job)}: after {describe(maker)}, which writes {path}" if maker else
                  f"# {missing_checkpoint(job, path)}")
    elif absent:
        print(f"# {missing_checkpoint(job, absent[0])}", file=sys.stderr, flush=True)
        failed.append(describe(job))
        return None
    blocked = "; cannot start until its missing inputs are there (listed first)" if job.run_dir in missing else ""
    print(f"# {describe(job)}: {'resuming' if status == 'resume' else 'new run'} in {job.run_dir}{blocked}", flush=True)
    print(shlex.join(cmd), flush=True)
    return cmd


def run_side_by_side(jobs: list[Job], nproc: int, parallel: int, failed: list[str],
                     missing: dict[Path, list[MissingInput]]) -> None:
    """Up to `parallel` runs at once (--jobs): small cells fill a many-core machine or a GPU better side by side
    than one after another. Whenever a slot is free, the first job in the plan's order whose makers (the runs
    that write what it needs) have ended starts in it, with its share of the CPU threads (OMP_NUM_THREADS,
    unless set) and, where several GPUs are visible, the slot's GPU. Its output goes to <run folder>/reproduce.log;
    one line here says how it ended."""
    gpus = visible_gpus()
    pending, running = list(jobs), {}  # running: future -> (job, slot)

    def ready(job: Job) -> bool:
        makers = {id(m) for path in job.needs if (m := maker_of(path, jobs)) is not None}
        unfinished = {id(j) for j in pending} | {id(j) for j, _ in running.values()}
        return not makers & unfinished

    def start(job: Job, slot: int) -> None:
        cmd = prepare(job, jobs, nproc, False, failed, missing)
        if cmd is not None:
            run_logged(job, cmd, slot_env(slot, parallel, gpus), failed)

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        while pending or running:
            job = next((j for j in pending if ready(j)), None) if len(running) < parallel else None
            if job is not None:
                pending = [j for j in pending if j is not job]
                slot = min(set(range(parallel)) - {s for _, s in running.values()})
                running[pool.submit(start, job, slot)] = (job, slot)
                continue
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                running.pop(future)
                future.result()  # an error in the tool itself stops it here, never silently


def run_logged(job: Job, cmd: list[str], env: dict[str, str], failed: list[str]) -> None:
    log = job.run_dir / "reproduce.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "ab") as out:
        code = subprocess.run(cmd, cwd=Path.cwd(), env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    took = f"{(time.monotonic() - start) / 60:.1f} min"
    if code:
        failed.append(describe(job))
        print(f"# {describe(job)}: failed (exit status {code}) after {took}; its output: {log}", file=sys.stderr,
              flush=True)
    else:
        print(f"# {describe(job)}: finished in {took} ({job.run_dir / 'summary.json'})", flush=True)


def visible_gpus() -> list[str]:
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [d for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


def slot_env(slot: int, parallel: int, gpus: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // parallel)))
    if len(gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    return env


# ---------------------------------------------------------------- entry point

def print_estimate(jobs: list[Job], check: InputCheck, bench_files: list[Path]) -> None:
    """The plan's device hours from each bench file's figures (tools.run_cost), and the runs whose estimate on
    a GPU exceeds the time they ask for."""
    todo = [job for job in jobs if job.todo]
    runs = []
    for job in todo:
        try:
            cfg = job.config()
        except (ConfigError, OSError):
            continue
        runs.append((job, cfg, check.train_set(cfg.data)))
    caches = [(c.job.config(), c.index, check.train_set(c.job.config().data)) for c in source_caches(jobs)]
    for path in bench_files:
        try:
            bench = run_cost.read_bench(path)
        except ValueError as e:
            print(f"# no estimate from {e}")
            continue
        result = run_cost.estimate(runs, caches, bench)
        print("\n".join(run_cost.report(result, len(todo))))
        if bench.gpu:
            for job in todo:
                hours = result.per_run.get(job.run_dir)
                r = job.resources
                if hours is not None and hours / (r.nodes * r.gpus) > time_hours(r.time):
                    print(f"# warning: {describe(job)}: about {hours / (r.nodes * r.gpus):.1f} h on "
                          f"{r.nodes} x {r.gpus} GPU(s) by {bench.path}, more than its time {r.time}")


def bench_files(given: list[Path] | None) -> list[Path]:
    """--bench, or the bench files of the checkout that exist (relative paths: here, else in the checkout)."""
    paths = [p if p.exists() or p.is_absolute() else ROOT / p for p in (given or run_cost.DEFAULT_BENCH)]
    return paths if given else [p for p in paths if p.exists()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, help=f"a table name ({', '.join(table_names())}) or a YAML path")
    add_seeds_argument(parser, [0, 1, 2], "the seeds to run (default 3: 0 1 2)")
    parser.add_argument("--cells", nargs="+", default=[], metavar="PATTERN",
                        help='only these cells: a column, a row label or "row / column" (wildcards allowed)')
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="runs root (run.root), default runs/")
    parser.add_argument("--nproc", type=int, default=1, help="processes (GPUs) per run, under accelerate launch")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once on this machine, each with its share of the threads (and GPUs); default 1")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the missing inputs, the commands, what is done and the cost; run nothing")
    parser.add_argument("--fetch", action="store_true",
                        help="with --dry-run or --slurm: download the inputs the configs say where to fetch from "
                             "(a local run always does so first)")
    parser.add_argument("--bench", type=Path, action="append",
                        help="bench file(s) for the cost estimate (default: bench/gpu-h100.json, bench/results.json)")
    slurm = parser.add_argument_group("SLURM", "--slurm writes sbatch scripts instead of running; the resources "
                                      "override every run's own (tables/*.yaml: resources)")
    slurm.add_argument("--slurm", action="store_true", help="write sbatch scripts and submit.sh")
    slurm.add_argument("--slurm-dir", type=Path, help="where the scripts go (default slurm/<table>/)")
    slurm.add_argument("--nodes", type=int)
    slurm.add_argument("--gpus-per-node", type=int)
    slurm.add_argument("--cpus-per-task", type=int, help="CPUs per node (default 8 per GPU)")
    slurm.add_argument("--time", help="sbatch --time (minutes, h:mm:ss, d-hh:mm:ss)")
    slurm.add_argument("--mem", help="sbatch --mem per node (64G)")
    slurm.add_argument("--account")
    slurm.add_argument("--partition")
    slurm.add_argument("--setup", help="the scripts' environment line (default: source .venv/bin/activate; '' none)")
    parser.add_argument("overrides", nargs="*", help="applied to every run after the cell's own, e.g. train.epochs=2")
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.jobs > 1 and args.nproc > 1):
        parser.error(f"--jobs {args.jobs}: give a count >= 1, and not with --nproc > 1 (a run on several GPUs "
                     "takes them all)")
    try:
        resources = Resources(nodes=args.nodes, gpus=args.gpus_per_node, cpus=args.cpus_per_task, time=args.time,
                              memory=args.mem)
    except ValidationError as e:
        parser.error(e.errors()[0]["msg"].removeprefix("Value error, "))
    # `--cells X key=value` would swallow the override as a pattern; a pattern never holds "=".
    args.overrides = [p for p in args.cells if "=" in p] + args.overrides
    args.cells = [p for p in args.cells if "=" not in p]
    try:
        table = load_table(args.table)
        runs_root = trial_root(args.runs, args.overrides)
        jobs = plan(table, args.seeds, runs_root, args.cells, args.overrides, resources)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not jobs:
        print(f"error: no cell of {table.name} matches --cells {' '.join(args.cells)}", file=sys.stderr)
        return 2
    if runs_root != args.runs:
        print(f"# the overrides change what the runs compute: this trial's runs go to {runs_root}/")
    check = InputCheck(fetch=args.fetch or not (args.dry_run or args.slurm))
    missing = missing_inputs(jobs, check)
    print_missing_inputs(jobs, missing)
    if args.slurm:
        from tools.slurm import Cluster, write_slurm
        write_slurm(table, jobs, args.slurm_dir or Path("slurm") / table.name,
                    Cluster(args.account, args.partition, args.setup))
        print_estimate(jobs, check, bench_files(args.bench))
        return 0
    status = run_all(jobs, args.nproc, args.dry_run, args.jobs, missing)
    if args.dry_run:
        print_estimate(jobs, check, bench_files(args.bench))
    return status


if __name__ == "__main__":
    sys.exit(main())
