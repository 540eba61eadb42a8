"""sbatch scripts for a plan of tools/run_plan.py (`make reproduce TABLE=... SLURM=1`).

One script per cell, an array job over its unfinished seeds (array task id = seed) that runs
`accelerate launch` over the cell's own resources (tools.tables: nodes, GPUs, CPUs and memory per node,
time; the command line overrides them); one script per distinct frozen-source output cache the cells read
(tools/cache_sources.py builds it, on one node with the first reading cell's GPUs); and submit.sh, which
submits them in plan order, each after the jobs it needs (`--dependency=afterok:`): a cache job after the
run that writes its source's weights (a KD teacher), a cell after its caches and those runs.
Every script starts with the environment set-up line (default: `source .venv/bin/activate` when the
checkout has one) and reads data, weights and caches from the paths in the configs, on a file system the
nodes share.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from tools.run_plan import ROOT, Job, SourceCache, describe, maker_of, missing_checkpoint, slug, source_caches
from tools.tables import Resources, Table

PORT = 29500


@dataclass(frozen=True)
class Cluster:
    """What every script says besides a job's own resources."""
    account: str | None = None
    partition: str | None = None
    setup: str | None = None  # the shell line that makes python and accelerate the project's; None: the venv's

    def setup_line(self) -> str | None:
        if self.setup is not None:
            return self.setup or None
        return "source .venv/bin/activate" if (ROOT / ".venv" / "bin" / "activate").exists() else None


def header(name: str, resources: Resources, cluster: Cluster, log: str, array: list[int] | None = None) -> list[str]:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}"]
    lines += [f"#SBATCH --array={','.join(map(str, array))}"] if array else []
    lines += [f"#SBATCH --nodes={resources.nodes}", "#SBATCH --ntasks-per-node=1",
              f"#SBATCH --gpus-per-node={resources.gpus}", f"#SBATCH --cpus-per-task={resources.cpus_per_node}",
              f"#SBATCH --time={resources.time}"]
    lines += [f"#SBATCH --mem={resources.memory}"] if resources.memory else []
    lines += [f"#SBATCH --account={cluster.account}"] if cluster.account else []
    lines += [f"#SBATCH --partition={cluster.partition}"] if cluster.partition else []
    return [*lines, f"#SBATCH --output={log}"]


def launcher(nodes: int, gpus_per_node: int) -> str:
    """accelerate launch over the allotted GPUs: one process per GPU, across nodes via srun (one task per node)."""
    # Array tasks of one cell may share a node: each rendezvous on its own port.
    port = f"--main_process_port $(({PORT} + SLURM_JOB_ID % 10000))"
    if nodes == 1:
        multi = f"--multi_gpu {port} " if gpus_per_node > 1 else ""
        return f"accelerate launch {multi}--num_processes {gpus_per_node}"
    # c10d rendezvous on the first node gives each machine its rank
    return (f"srun --ntasks-per-node=1 accelerate launch --multi_gpu "
            f"--num_machines \"$SLURM_NNODES\" --num_processes $((SLURM_NNODES * {gpus_per_node})) "
            f"--rdzv_backend c10d --main_process_ip \"$HEAD_NODE\" {port}")


def body(cluster: Cluster, nodes: int) -> list[str]:
    setup = cluster.setup_line()
    return ["set -euo pipefail", f"cd {shlex.quote(str(ROOT))}", *([setup] if setup else []),
            *(['HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)'] if nodes > 1 else [])]


def cell_script(table: Table, job: Job, seeds: list[int], cluster: Cluster, log_dir: Path) -> str:
    """An sbatch array job over `seeds` (array task id = seed) running the job's cell."""
    cell, resources = job.cell, job.resources
    train = shlex.join(job.train_args("SEED")).replace("seed=SEED", 'seed="$SEED"')
    paper = (f"paper {cell.paper}" + (f" ± {cell.pm}" if cell.pm is not None else "")
             if cell.paper is not None else "no paper number")
    checks = [f"test -f {shlex.quote(str(p))} || {{ echo {shlex.quote(missing_checkpoint(job, p))} >&2; exit 1; }}"
              for p in job.needs]
    lines = [
        *header(slug(f"sskt-{table.name}-{job.label}"), resources, cluster, f"{log_dir}/%x-seed%a-%j.out", seeds),
        f"# {table.name}: {job.label}: {cell.config} ({paper}); the array task id is the seed.",
        "# Data, weights and source caches are read from the paths in the config (a shared file system); the",
        "# caches are built first by their own jobs (submit.sh).",
        *body(cluster, resources.nodes),
        "SEED=$SLURM_ARRAY_TASK_ID",
        *(["# the checkpoints its sources read (submit.sh starts it after the jobs that write them)", *checks]
          if checks else []),
        f"{launcher(resources.nodes, resources.gpus)} {train}",
    ]
    return "\n".join(lines) + "\n"


def cache_script(table: Table, cache: SourceCache, name: str, cluster: Cluster, log_dir: Path) -> str:
    """One job building one source's output cache on one node, with the first reading cell's GPUs."""
    resources = Resources(nodes=1).over(cache.job.resources)
    readers = list(dict.fromkeys(job.label for job in cache.readers))
    lines = [
        *header(slug(f"sskt-{table.name}-{name}"), resources, cluster, f"{log_dir}/%x-%j.out"),
        f"# {table.name}: the output cache of source '{cache.name}' of {cache.job.cell.config}, read by "
        f"{len(cache.readers)} run(s) ({', '.join(readers[:3])}{' ...' if len(readers) > 3 else ''})",
        "# A valid cache is kept (a quick check), a missing, stale or damaged one built (tools/cache_sources.py).",
        *body(cluster, 1),
        *[f"test -f {shlex.quote(str(p))} || {{ echo {shlex.quote(missing_checkpoint(cache.job, p))} >&2; exit 1; }}"
          for p in cache.job.needs],
        f"{launcher(1, resources.gpus)} {shlex.join(cache.build_args())}",
    ]
    return "\n".join(lines) + "\n"


def write_slurm(table: Table, jobs: list[Job], out_dir: Path, cluster: Cluster = Cluster()) -> list[Path]:
    """One script per cell (array over its unfinished seeds) and per source cache, and submit.sh submitting each
    after those it needs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = (out_dir / "logs").resolve()
    by_cell: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        by_cell.setdefault((job.label, job.cell.run_name), []).append(job)
    caches = source_caches(jobs)
    scripts, submit = [], []
    variables: dict[object, str] = {}  # run folder or cache -> the shell variable holding its job id

    def submitted(path: Path, variable: str, after: list[str]) -> None:
        dependency = f"--dependency=afterok:{':'.join(f'${{{v}%%;*}}' for v in after)} " if after else ""
        submit.append(f"{variable}=$(sbatch --parsable {dependency}{shlex.quote(str(path.resolve()))})")
        scripts.append(path)

    def makers(job: Job) -> list[str]:
        made_by = (maker_of(p, jobs) for p in job.needs)
        return [variables[m.run_dir] for m in made_by if m is not None and m.run_dir in variables]

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
        reads = [c for c in caches if any(r in cell_jobs for r in c.readers)]
        for cache in (c for c in reads if id(c) not in variables):
            name = f"cache_{slug(cache.job.cell.run_name)}_{slug(cache.name)}"
            path = out_dir / f"{name}.sbatch"
            path.write_text(cache_script(table, cache, name, cluster, log_dir))
            variables[id(cache)] = f"job_{name}"
            submitted(path, f"job_{name}", sorted(set(makers(cache.job))))
            print(f"{path}: source '{cache.name}' of {cache.job.cell.config}, read by {len(cache.readers)} run(s)")
        name = slug(first.label)
        path = out_dir / f"{name}.sbatch"
        path.write_text(cell_script(table, first, todo, cluster, log_dir))
        after = sorted({v for j in cell_jobs for v in makers(j)} | {variables[id(c)] for c in reads})
        submitted(path, f"job_{name}", after)
        variables.update({j.run_dir: f"job_{name}" for j in cell_jobs})
        r = first.resources
        print(f"{path}: {first.cell.config}, seeds {todo}, {r.nodes} node(s) x {r.gpus} GPU(s), {r.time}"
              + (f", after {', '.join(after)}" if after else ""))
    script = out_dir / "submit.sh"
    script.write_text("#!/bin/bash\n# Submits every job of the table (one array job per cell, one job per source "
                      "cache), each after the jobs it needs.\nset -euo pipefail\n"
                      f"mkdir -p {shlex.quote(str(log_dir))}\n" + "".join(line + "\n" for line in submit))
    script.chmod(0o755)
    print(f"{script}: submits the {len(scripts)} scripts (bash {script})")
    return scripts
