"""The plan of a table's runs (tools/reproduce.py runs it, tools/slurm.py writes it as sbatch scripts,
tools/results.py reads its run folders): every cell x seed as a `Job`, after the runs its sources' weights
come from (a KD teacher: a prerequisite), each with its run folder, its engine.train arguments and whether it
is still to do; and the distinct frozen-source output caches the jobs read, built once before them.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from engine.config import ConfigError, load_config, neutral_keys, resumable_keys
from engine.experiment import resolve_sources
from engine.reruns import changed_settings
from tools.tables import DEFAULT_RESOURCES, Cell, Resources, Table, TableError, cell_label, selected

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = Path("runs")
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
    resources: Resources = DEFAULT_RESOURCES  # what it asks a SLURM cluster for

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
        try:
            cfg = self.config()
        except (ConfigError, OSError) as e:
            return [str(e)]
        return changed_settings(self.run_dir / "config.yaml", cfg, may_differ=resumable_keys() - {"train.epochs"})

    def config(self):
        """The config this job's run trains with (ConfigError, OSError when it cannot be read)."""
        args = self.train_args()
        stat = config_path(self.cell.config).stat()  # a config edited since is read again
        return resolved_config(self.cell.config, tuple(args[args.index("--config") + 2:]), (stat.st_mtime_ns, stat.st_size))

    @property
    def todo(self) -> bool:
        """Whether the job would train (now or when its turn comes)."""
        return self.status in ("new", "resume", "stale")


@functools.lru_cache(maxsize=None)
def resolved_config(config: str, overrides: tuple[str, ...], file_stamp: tuple[int, int]):
    return load_config(config_path(config), list(overrides))


def config_path(config: str) -> Path:
    return Path(config) if Path(config).exists() else ROOT / config


def trial_root(runs_root: Path, extra: list[str]) -> Path:
    """`runs_root` for the table itself; runs_root/trial-<hash> when `extra` changes what the runs compute."""
    changing = sorted(o for o in extra if o.partition("=")[0].strip() not in neutral_keys())
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
                       depth: int = 0, resources: Resources = DEFAULT_RESOURCES,
                       prerequisites: dict[str, Resources] | None = None) -> list[Job]:
    """The runs the cell's sources need (recursively, first), then the cell's own job. A prerequisite asks for
    its entry in `prerequisites` (by run name) over `resources`, the cell's."""
    if depth > 8:
        raise TableError(f"{cell.config}: its sources' weights need runs that need each other")
    jobs, needs, overrides = [], [], []
    for index, weights, name, needed_seed in needed_runs(cell):
        maker = Cell(config=f"configs/{name}.yaml")
        own = (prerequisites or {}).get(name, Resources()).over(resources)
        jobs += with_prerequisites(f"prerequisite {name}", maker, needed_seed, runs_root, extra, depth + 1, own,
                                   prerequisites)
        needs.append(Path(runs_root) / weights.relative_to(DEFAULT_RUNS))
        if Path(runs_root) != DEFAULT_RUNS:
            overrides.append(f"sources.{index}.weights={needs[-1]}")
    jobs.append(Job(label, cell, seed, Path(runs_root), tuple(needs), tuple(overrides), tuple(extra), resources))
    return jobs


def plan(table: Table, seeds: list[int], runs_root: Path = DEFAULT_RUNS, cells: list[str] = (),
         extra: list[str] = (), resources: Resources = Resources()) -> list[Job]:
    """Every selected cell x seed in reading order, each after the runs it needs; a run folder is listed once.
    `resources` (the command line's) override every job's own."""
    jobs, seen = [], set()
    prerequisites = {name: resources.over(own) for name, own in table.prerequisites.items()}
    for row, column, cell in table.cells():
        if not selected(row, column, list(cells)):
            continue
        for seed in seeds:
            for job in with_prerequisites(cell_label(row, column), cell, seed, runs_root, tuple(extra),
                                          resources=resources.over(table.resources_of(row, cell)),
                                          prerequisites=prerequisites):
                if job.run_dir not in seen:
                    seen.add(job.run_dir)
                    jobs.append(job)
    return jobs


def maker_of(path: Path, jobs: list[Job]) -> Job | None:
    return next((j for j in jobs if path.is_relative_to(j.run_dir)), None)


@dataclass
class SourceCache:
    """One frozen source's output cache that the plan's runs read, built once by tools.cache_sources before them
    (a training job would otherwise build it while the others wait on its file lock)."""
    job: Job  # the first job that reads it: its config and overrides build it
    index: int  # the source's position in that config
    name: str  # the source's name
    sources: int  # how many sources that config has (the others' caches are not built by this one)
    readers: list[Job]

    def build_args(self) -> list[str]:
        """tools.cache_sources' arguments: the job's config and overrides, every other source's cache off."""
        args = self.job.train_args()
        others = [f"sources.{i}.cache=off" for i in range(self.sources) if i != self.index]
        return ["-m", "tools.cache_sources", *args[args.index("--config"):], *others]


def cache_key(cfg, index: int) -> str:
    """What a source's cache depends on, as the config states it: the source (name, weights, preprocessing),
    the data and the cache settings (not batch sizes, loaders or workers). The cache's own identity hashes the
    files' contents; this key is the same for the same inputs named the same way."""
    data = cfg.data.model_dump(mode="json")
    for loading_only in ("batch_size", "eval_batch_size", "workers", "loader", "download", "val_clips"):
        data.pop(loading_only, None)
    source = resolve_sources(cfg)[index].model_dump(mode="json", exclude={"cache"}, warnings=False)
    settings = cfg.source_cache.model_dump(mode="json", exclude={"memory_gb", "batch_size"})
    return json.dumps([source, data, settings], sort_keys=True)


def source_caches(jobs: list[Job]) -> list[SourceCache]:
    """The distinct caches of the sources (cache not off) of every job that would train, in plan order."""
    caches: dict[str, SourceCache] = {}
    for job in (j for j in jobs if j.todo):
        try:
            cfg = job.config()
        except (ConfigError, OSError):
            continue
        sources = resolve_sources(cfg)
        for index, source in enumerate(sources):
            if source.cache != "off":
                cache = caches.setdefault(cache_key(cfg, index), SourceCache(job, index, source.name, len(sources), []))
                cache.readers.append(job)
    return list(caches.values())


def train_args(cell: Cell, seed: int | str, runs_root: Path, extra: list[str]) -> list[str]:
    """engine.train's arguments: config, seed, the cell's overrides, its folder, then `extra` (a job's: its
    sources' weights, then the table's overrides)."""
    args = ["-m", "engine.train", "--config", cell.config, f"seed={seed}", *cell.overrides]
    if cell.run:
        args.append(f"run.name={cell.run}")
    if Path(runs_root) != DEFAULT_RUNS:
        args.append(f"run.root={runs_root}")
    return [*args, *extra]


def describe(job: Job) -> str:
    return f"{job.label} seed {job.seed}"


def missing_checkpoint(job: Job, path: Path) -> str:
    return f"{describe(job)}: needs {path}, which is missing (run {maker_name(path)} first); not run"


def maker_name(path: Path) -> str:
    for parent in path.parents:
        if re.fullmatch(r"seed\d+", parent.name):
            return f"{parent.parent}, {parent.name}"
    return str(path)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9+]+", "_", text).strip("_").lower().replace("+", "")
