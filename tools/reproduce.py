"""Run every cell x seed of a named table (tables/<name>.yaml), each as its own run folder.

    python -m tools.reproduce --table comparison --seeds 3                (make reproduce TABLE=comparison SEEDS=3)
    python -m tools.reproduce --table demo --seeds 3 --dry-run            (PRINT=1: the commands, and what is done)
    python -m tools.reproduce --table comparison --seeds 3 --nproc 4      (NPROC=4: each run on 4 GPUs)
    python -m tools.reproduce --table demo --seeds 3 --jobs 2             (JOBS=2: two runs at a time)
    python -m tools.reproduce --table comparison --seeds 3 --slurm --nodes 2 --gpus-per-node 4   (SLURM=1)

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
NEUTRAL_KEYS) send the whole table to its own runs root, runs/trial-<hash>/, so a later full
table never resumes a trial (tools/results.py finds it from the same overrides).

Prerequisites follow from the configs: a source whose weights lie under runs/
(`runs/<name>/seed<k>/checkpoints/final.pt`, a KD teacher) is made by the run of
configs/<name>.yaml with seed k, which is planned (once) before the first cell that needs it,
in the same runs root. A cell whose needed checkpoint is missing when it starts fails in one
line and is not run.

--slurm writes one sbatch script per cell (and per prerequisite), an array job over its
unfinished seeds (task id = seed), that runs `accelerate launch` across the allotted GPUs
and nodes, and a submit.sh that submits them all, each after the jobs it needs
(`--dependency=afterok:`).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import functools
import hashlib
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine.config import ConfigError, load_config
from engine.config import resumable_keys
from engine.reruns import changed_settings
from tools.tables import Cell, Table, TableError, cell_label, load_table, selected, table_names

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = Path("runs")
PORT = 29500
# Overrides that do not change what a run computes; any other sends the table to a trial runs root.
NEUTRAL_KEYS = {"train.progress", "train.channels_last", "data.workers"}
# A checkpoint another run writes: runs/<run name>/seed<k>/checkpoints/<file>.
RUN_CHECKPOINT = re.compile(r"(?P<name>.+)/seed(?P<seed>\d+)/checkpoints/[^/]+")


@dataclass(frozen=True)
class Job:
    """One cell x seed (or a run that cells need first)."""
    label: str  # "row / column", or "prerequisite <run name>"
    cell: Cell
    seed: int
    runs_root: Path = DEFAULT_RUNS
    needs: tuple[Path, ...] = ()  # checkpoints of other runs this one reads (its sources' weights)
    overrides: tuple[str, ...] = ()  # those sources pointed at them, when the runs root is not runs/
    extra: tuple[str, ...] = ()  # the overrides given to every run of the table

    @property
    def run_dir(self) -> Path:
        return self.cell.run_dir(self.runs_root, self.seed)

    def train_args(self, seed: int | str | None = None) -> list[str]:
        return train_args(self.cell, self.seed if seed is None else seed, self.runs_root, [*self.overrides, *self.extra])

    @property
    def status(self) -> str:
        if not config_path(self.cell.config).exists():
            return "missing config"
        if (self.run_dir / "summary.json").exists():
            return "stale" if self.changed_settings() else "done"
        if (self.run_dir / "checkpoints" / "last").exists():
            return "stale" if self.changed_settings() else "resume"
        return "new"

    def changed_settings(self) -> list[str]:
        """How the finished (or interrupted) run in run_dir was made otherwise than this job would make it now (the
        config or an override changed since): such a run is never reused as this job's result. A folder
        without the config.yaml every run writes (made by hand) cannot be compared: none."""
        if not (self.run_dir / "config.yaml").exists():
            return []
        args = self.train_args()
        try:
            stat = config_path(self.cell.config).stat()  # a config edited since is read again
            cfg = resolved_config(self.cell.config, tuple(args[args.index("--config") + 2:]), (stat.st_mtime_ns, stat.st_size))
        except (ConfigError, OSError) as e:
            return [str(e)]
        return changed_settings(self.run_dir / "config.yaml", cfg, may_differ=resumable_keys() - {"train.epochs"})


@functools.lru_cache(maxsize=None)
def resolved_config(config: str, overrides: tuple[str, ...], file_stamp: tuple[int, int]):
    return load_config(config_path(config), list(overrides))


def set_aside(run_dir: Path) -> Path:
    """Move a stale run out of the way (kept, never deleted): <run_dir>.stale-<n>."""
    n = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.stale-{n}")).exists():
        n += 1
    run_dir.rename(aside)
    return aside


def config_path(config: str) -> Path:
    return Path(config) if Path(config).exists() else ROOT / config


def seed_list(values: list[str]) -> list[int]:
    """--seeds, for every tool that runs or reads seeds: one number N means seeds 0..N-1; otherwise (or
    whenever a value is a range a-b, inclusive: `3-4`; a single seed k is `k-k`) the seeds themselves."""
    if len(values) == 1 and values[0].isdigit():
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


def trial_root(runs_root: Path, extra: list[str]) -> Path:
    """`runs_root` for the table itself; runs_root/trial-<hash> when `extra` changes what the runs compute."""
    changing = sorted(o for o in extra if o.partition("=")[0].strip() not in NEUTRAL_KEYS)
    if not changing:
        return Path(runs_root)
    return Path(runs_root) / f"trial-{hashlib.sha256(chr(10).join(changing).encode()).hexdigest()[:8]}"


def needed_runs(cell: Cell) -> list[tuple[int, Path, str, int]]:
    """(source index, weights, run name, seed) for each source of the cell whose weights another run writes."""
    try:
        sources = load_config(config_path(cell.config), cell.overrides).sources
    except (ConfigError, FileNotFoundError, OSError):
        return []  # a missing or broken config is reported when its own job runs
    needed = []
    for i, source in enumerate(sources):
        weights = Path(source.weights or "")
        if weights.parts[:1] == DEFAULT_RUNS.parts and (m := RUN_CHECKPOINT.fullmatch("/".join(weights.parts[1:]))):
            needed.append((i, weights, m["name"], int(m["seed"])))
    return needed


def with_prerequisites(label: str, cell: Cell, seed: int, runs_root: Path, extra: tuple[str, ...] = (),
                       depth: int = 0) -> list[Job]:
    """The runs the cell's sources need (recursively, first), then the cell's own job."""
    if depth > 8:
        raise TableError(f"{cell.config}: its sources' weights need runs that need each other")
    jobs, needs, overrides = [], [], []
    for index, weights, name, needed_seed in needed_runs(cell):
        maker = Cell(config=f"configs/{name}.yaml")
        jobs += with_prerequisites(f"prerequisite {name}", maker, needed_seed, runs_root, extra, depth + 1)
        needs.append(Path(runs_root) / weights.relative_to(DEFAULT_RUNS))
        if Path(runs_root) != DEFAULT_RUNS:
            overrides.append(f"sources.{index}.weights={needs[-1]}")
    jobs.append(Job(label, cell, seed, Path(runs_root), tuple(needs), tuple(overrides), tuple(extra)))
    return jobs


def plan(table: Table, seeds: list[int], runs_root: Path = DEFAULT_RUNS, cells: list[str] = (),
         extra: list[str] = ()) -> list[Job]:
    """Every selected cell x seed in reading order, each after the runs it needs; a run folder is listed once."""
    jobs, seen = [], set()
    for row, column, cell in table.cells():
        if not selected(row, column, list(cells)):
            continue
        for seed in seeds:
            for job in with_prerequisites(cell_label(row, column), cell, seed, runs_root, tuple(extra)):
                if job.run_dir not in seen:
                    seen.add(job.run_dir)
                    jobs.append(job)
    return jobs


def maker_of(path: Path, jobs: list[Job]) -> Job | None:
    return next((j for j in jobs if path.is_relative_to(j.run_dir)), None)


def train_args(cell: Cell, seed: int | str, runs_root: Path, extra: list[str]) -> list[str]:
    """engine.train's arguments: config, seed, the cell's overrides, its folder, then `extra` (a job's: its
    sources' weights, then the table's overrides)."""
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


def command(job: Job, nproc: int) -> list[str]:
    return [*launcher(nproc), *job.train_args()]


def describe(job: Job) -> str:
    return f"{job.label} seed {job.seed}"


def missing_checkpoint(job: Job, path: Path) -> str:
    return f"{describe(job)}: needs {path}, which is missing (run {maker_name(path)} first); not run"


def maker_name(path: Path) -> str:
    for parent in path.parents:
        if re.fullmatch(r"seed\d+", parent.name):
            return f"{parent.parent}, {parent.name}"
    return str(path)


# ---------------------------------------------------------------- running here

def run_all(jobs: list[Job], nproc: int, dry_run: bool, parallel: int = 1) -> int:
    failed, missing = [], sorted({j.cell.config for j in jobs if j.status == "missing config"})
    if parallel > 1 and not dry_run:
        run_side_by_side(jobs, nproc, parallel, failed)
    else:
        for job in jobs:
            cmd = prepare(job, jobs, nproc, dry_run, failed)
            if cmd and not dry_run and subprocess.run(cmd, cwd=Path.cwd()).returncode != 0:
                failed.append(describe(job))
    counts = {s: sum(j.status == s for j in jobs) for s in ("done", "stale", "resume", "new", "missing config")}
    print(f"# {len(jobs)} cell x seed runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if missing:
        print(f"# configs that do not exist yet ({len(missing)}): {' '.join(missing)}")
    if failed:
        print(f"# failed ({len(failed)}): {'; '.join(failed)}", file=sys.stderr)
    return 1 if failed or (missing and not dry_run) else 0


def prepare(job: Job, jobs: list[Job], nproc: int, dry_run: bool, failed: list[str]) -> list[str] | None:
    """Say what happens to `job` and get it ready: the command to run, or None when it is not run (done, no
    config yet, a needed checkpoint missing: then it is in `failed`). A stale run is set aside here."""
    status = job.status
    cmd = command(job, nproc)
    if status == "missing config":
        print(f"# {describe(job)}: config {job.cell.config} does not exist yet; not run")
        return None
    if status == "done":
        print(f"# {describe(job)}: done ({job.run_dir / 'summary.json'}); skipped")
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
    print(f"# {describe(job)}: {'resuming' if status == 'resume' else 'new run'} in {job.run_dir}", flush=True)
    print(shlex.join(cmd), flush=True)
    return cmd


def run_side_by_side(jobs: list[Job], nproc: int, parallel: int, failed: list[str]) -> None:
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
        cmd = prepare(job, jobs, nproc, False, failed)
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


# ---------------------------------------------------------------- SLURM

def slurm_script(table: Table, job: Job, seeds: list[int], nodes: int, gpus_per_node: int, cpus_per_task: int, time_limit: str, partition: str | None, log_dir: Path) -> str:
    """An sbatch array job over `seeds` (array task id = seed) running the job's cell under accelerate launch."""
    cell = job.cell
    train = shlex.join(job.train_args("SEED")).replace("seed=SEED", 'seed="$SEED"')
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
    checks = [f"test -f {shlex.quote(str(p))} || {{ echo {shlex.quote(missing_checkpoint(job, p))} >&2; exit 1; }}"
              for p in job.needs]
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={slug(f'sskt-{table.name}-{job.label}')}",
        f"#SBATCH --array={','.join(map(str, seeds))}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"#SBATCH --cpus-per-task={cpus_per_task}",
        f"#SBATCH --time={time_limit}",
        f"#SBATCH --output={log_dir}/%x-seed%a-%j.out",
        *([f"#SBATCH --partition={partition}"] if partition else []),
        f"# {table.name}: {job.label}: {cell.config} ({paper}); the array task id is the seed.",
        "# Data, weights and source caches are read from the paths in the config (a shared file system);",
        "# the first job to need a source cache builds it under a file lock, the others wait and reuse it.",
        "set -euo pipefail",
        f"cd {shlex.quote(str(ROOT))}",
        "SEED=$SLURM_ARRAY_TASK_ID",
        *(["# the checkpoints its sources read (submit.sh starts it after the jobs that write them)", *checks]
          if checks else []),
        *(['HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'] if nodes > 1 else []),
        f"{launch} {train}",
    ]
    return "\n".join(lines) + "\n"


def write_slurm(table: Table, jobs: list[Job], out_dir: Path, **resources) -> list[Path]:
    """One script per cell (array over its unfinished seeds), and submit.sh submitting each after those it needs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = (out_dir / "logs").resolve()
    by_cell: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        by_cell.setdefault((job.label, job.cell.run_name), []).append(job)
    scripts, variables, submit = [], {}, []  # run folder -> the shell variable holding its job's id
    for cell_jobs in by_cell.values():
        first = cell_jobs[0]
        todo = [j.seed for j in cell_jobs if j.status in ("new", "resume")]
        for job in (j for j in cell_jobs if j.status == "stale"):
            print(f"# {describe(job)}: {job.run_dir} was made with other settings "
                  f"({'; '.join(job.changed_settings()[:3])}); move it away (or run here) to include it; no script")
        if first.status == "missing config":
            print(f"# {first.label}: config {first.cell.config} does not exist yet; no script")
            continue
        if not todo:
            print(f"# {first.label}: every seed done; no script")
            continue
        name = slug(first.label)
        path = out_dir / f"{name}.sbatch"
        path.write_text(slurm_script(table, first, todo, log_dir=log_dir, **resources))
        scripts.append(path)
        after = sorted({variables[maker.run_dir] for j in cell_jobs for p in j.needs
                        if (maker := maker_of(p, jobs)) is not None and maker.run_dir in variables})
        dependency = f"--dependency=afterok:{':'.join(f'${{{v}%%;*}}' for v in after)} " if after else ""
        variable = f"job_{name}"
        submit.append(f"{variable}=$(sbatch --parsable {dependency}{shlex.quote(str(path.resolve()))})")
        variables.update({j.run_dir: variable for j in cell_jobs})
        print(f"{path}: {first.cell.config}, seeds {todo}" + (f", after {', '.join(after)}" if after else ""))
    script = out_dir / "submit.sh"
    script.write_text("#!/bin/bash\n# Submits every cell of the table (one array job per cell), each after the jobs "
                      "whose checkpoints it reads.\nset -euo pipefail\n"
                      f"mkdir -p {shlex.quote(str(log_dir))}\n" + "".join(line + "\n" for line in submit))
    script.chmod(0o755)
    print(f"{script}: submits the {len(scripts)} scripts (bash {script})")
    return scripts


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9+]+", "_", text).strip("_").lower().replace("+", "")


# ---------------------------------------------------------------- entry point

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
    if args.jobs < 1 or (args.jobs > 1 and args.nproc > 1):
        parser.error(f"--jobs {args.jobs}: give a count >= 1, and not with --nproc > 1 (a run on several GPUs "
                     "takes them all)")
    # `--cells X key=value` would swallow the override as a pattern; a pattern never holds "=".
    args.overrides = [p for p in args.cells if "=" in p] + args.overrides
    args.cells = [p for p in args.cells if "=" not in p]
    try:
        table = load_table(args.table)
        runs_root = trial_root(args.runs, args.overrides)
        jobs = plan(table, args.seeds, runs_root, args.cells, args.overrides)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not jobs:
        print(f"error: no cell of {table.name} matches --cells {' '.join(args.cells)}", file=sys.stderr)
        return 2
    if runs_root != args.runs:
        print(f"# the overrides change what the runs compute: this trial's runs go to {runs_root}/")
    if args.slurm:
        write_slurm(table, jobs, args.slurm_dir or Path("slurm") / table.name,
                    nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_task=args.cpus_per_task,
                    time_limit=args.time, partition=args.partition)
        return 0
    return run_all(jobs, args.nproc, args.dry_run, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
