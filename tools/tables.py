"""Named result tables as data: tables/<name>.yaml (rows -> configs, the paper's number per cell).

    title: ...
    metric: test/top1                 # what each cell reports (a row or a cell may say otherwise)
    columns: [KD, DML, SSKT]
    baseline: {row: CIFAR-10 ResNet-20, column: KD}   # optional: a "Δ vs KD" beside every other cell
    layout: grid                      # grid: a line per row (the paper's look); cells: a line per cell
    resources: {gpus: 1, time: "8:00:00"}             # what one run asks a SLURM cluster for (below)
    prerequisites:                    # optional: resources of runs the cells need first (a KD teacher)
      cifar10/resnet110_scratch: {time: "12:00:00"}
    rows:
      - label: CIFAR-10 ResNet-20
        also: [test/top5]             # further metrics shown under the row, without a paper number
        resources: {memory: 32G}      # the row's runs (a cell may say otherwise)
        cells:
          KD: {config: configs/cifar10/resnet20_kd.yaml, paper: 91.75, pm: 0.24}
          SSKT: {config: ..., paper: 92.46, pm: 0.15, note: P+I,
                 overrides: [model.head=linear], run: name/of/its/run/folder}

A cell is one experiment: its config, the overrides it needs (then also its own `run`
folder name), and where the paper has one, the paper's number and its +-. A column a row
has no cell for was not in the paper. The baseline is one cell (or, without `row`, each
row's own cell in that column); every other cell shows its difference to it, paired by
seed. tools/reproduce.py runs the cells, tools/results.py collects them; both read tables
through this module. A cell's prerequisites (a KD teacher's run) follow from its config
(tools/reproduce.py: a source's weights under runs/).

Resources (nodes; gpus, cpus and memory per node; time, as sbatch takes them) are looked up
cell, then row, then table, then DEFAULT_RESOURCES, each field on its own; a prerequisite's
come from `prerequisites`, else from the first cell that needs it. The command line
(tools/reproduce.py --nodes, --gpus-per-node, --time, ...) overrides them for every run.
"""
from __future__ import annotations

import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, PositiveInt, ValidationError, field_validator, model_validator

from engine.config import default_run_name
from foundation.errors import UserError

TABLES_DIR = Path(__file__).resolve().parents[1] / "tables"


class TableError(UserError):
    """One line naming the table file and the key at fault."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# sbatch --time: minutes[:seconds], hours:minutes:seconds, days-hours[:minutes[:seconds]]
SLURM_TIME = re.compile(r"(?P<days>\d+)-(?P<hours>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
                        r"|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?")


def time_hours(text: str) -> float:
    """An sbatch --time value in hours (ValueError when it is none)."""
    m = SLURM_TIME.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"time {text!r} is not an sbatch time (minutes, h:mm:ss, d-hh, d-hh:mm:ss)")
    n = {k: int(v) for k, v in m.groupdict().items() if v is not None}
    if "days" in n:
        return 24 * n["days"] + n["hours"] + n.get("dm", 0) / 60 + n.get("ds", 0) / 3600
    if "c" in n:  # hours:minutes:seconds
        return n["a"] + n["b"] / 60 + n["c"] / 3600
    return n["a"] / 60 + n.get("b", 0) / 3600  # minutes[:seconds]


class Resources(Strict):
    """What one run asks a SLURM cluster for; a field left out is looked up further (see the module)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    nodes: PositiveInt | None = None
    gpus: PositiveInt | None = None  # per node
    cpus: PositiveInt | None = None  # per node (one task per node); default 8 per GPU
    time: str | None = None  # sbatch --time
    memory: str | None = None  # sbatch --mem, per node: 64G, 500M; default: the cluster's

    @field_validator("time")
    @classmethod
    def _sbatch_time(cls, value):
        if value is not None:
            time_hours(value)
        return value

    @field_validator("memory")
    @classmethod
    def _sbatch_memory(cls, value):
        if value is not None and not re.fullmatch(r"\d+[KMGT]?", value):
            raise ValueError(f"memory {value!r} is not an sbatch --mem size (e.g. 64G, 500M)")
        return value

    def over(self, base: "Resources") -> "Resources":
        """These fields where set, `base`'s elsewhere."""
        return Resources(**{**base.model_dump(exclude_none=True), **self.model_dump(exclude_none=True)})

    @property
    def cpus_per_node(self) -> int:
        return self.cpus or 8 * (self.gpus or 1)


DEFAULT_RESOURCES = Resources(nodes=1, gpus=1, time="24:00:00")


class Cell(Strict):
    config: str
    overrides: list[str] = []
    run: str | None = None  # run folder name under runs/; default: the config's own (engine.config)
    metric: str | None = None  # default: the row's
    paper: float | None = None
    pm: float | None = None  # the paper's +- (its std over runs), where it gave one
    note: str | None = None  # e.g. the source set, "P+I"
    resources: Resources = Resources()

    @model_validator(mode="after")
    def _own_folder_when_overridden(self):
        if self.overrides and not self.run:
            raise ValueError(f"a cell with overrides needs its own `run` folder name (config {self.config})")
        return self

    @property
    def run_name(self) -> str:
        return self.run or default_run_name(Path(self.config))

    def run_dir(self, runs_root: Path, seed: int) -> Path:
        return Path(runs_root) / self.run_name / f"seed{seed}"


class Row(Strict):
    label: str
    metric: str | None = None  # default: the table's
    also: list[str] = []
    resources: Resources = Resources()
    cells: dict[str, Cell]


class Baseline(Strict):
    column: str
    row: str | None = None  # None: each row's own cell in `column`


class Table(Strict):
    name: str = ""
    title: str
    metric: str
    protocol: str = ""  # how the paper's numbers were obtained, shown under the title
    columns: list[str]
    rows: list[Row]
    baseline: Baseline | None = None
    layout: Literal["grid", "cells"] = "grid"
    headers: tuple[str, str] = ("row", "column")  # what a row and a column are, for the cells layout
    resources: Resources = Resources()
    prerequisites: dict[str, Resources] = {}  # run name -> the resources of the run that makes it

    @model_validator(mode="after")
    def _known_columns(self):
        for row in self.rows:
            unknown = set(row.cells) - set(self.columns)
            if unknown:
                raise ValueError(f"row '{row.label}': cells {sorted(unknown)} are not among columns {self.columns}")
        if self.baseline is not None:
            labels = [row.label for row in self.rows]
            if self.baseline.column not in self.columns:
                raise ValueError(f"baseline column '{self.baseline.column}' is not among columns {self.columns}")
            if self.baseline.row is not None and self.baseline.row not in labels:
                raise ValueError(f"baseline row '{self.baseline.row}' is not among rows {labels}")
            if self.baseline.row is not None and self.baseline.column not in self.rows[labels.index(self.baseline.row)].cells:
                raise ValueError(f"baseline: row '{self.baseline.row}' has no cell '{self.baseline.column}'")
        return self

    def metric_of(self, row: Row, column: str) -> str:
        return row.cells[column].metric or row.metric or self.metric

    def cells(self):
        """(row, column, cell) for every cell, in reading order."""
        for row in self.rows:
            for column in self.columns:
                if column in row.cells:
                    yield row, column, row.cells[column]

    def baseline_of(self, row: Row, column: str) -> tuple[Row, Cell] | None:
        """The cell `row`/`column` is compared with; None for the baseline itself or where there is none."""
        if self.baseline is None:
            return None
        base_row = row if self.baseline.row is None else next(r for r in self.rows if r.label == self.baseline.row)
        base = base_row.cells.get(self.baseline.column)
        if base is None or base is row.cells[column]:
            return None
        return base_row, base

    def resources_of(self, row: Row, cell: Cell) -> Resources:
        return cell.resources.over(row.resources.over(self.resources.over(DEFAULT_RESOURCES)))

    def baseline_name(self) -> str:
        return self.baseline.column if self.baseline else ""


def cell_label(row: Row, column: str) -> str:
    return f"{row.label} / {column}"


def selected(row: Row, column: str, patterns: list[str]) -> bool:
    """Whether a cell matches one of `patterns` (shell wildcards, any case): its column, its row's label,
    or "row / column". No patterns: every cell."""
    if not patterns:
        return True
    names = [column.lower(), row.label.lower(), cell_label(row, column).lower()]
    return any(fnmatchcase(name, pattern.lower().replace(" / ", "/").replace("/", " / "))
               for pattern in patterns for name in names)


def table_names(folder: Path = TABLES_DIR) -> list[str]:
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def load_table(name_or_path: str, folder: Path = TABLES_DIR) -> Table:
    path = Path(name_or_path)
    if path.suffix != ".yaml":
        path = Path(folder) / f"{name_or_path}.yaml"
    if not path.exists():
        raise TableError(f"{path}: no such table (known: {', '.join(table_names(folder)) or 'none'})")
    try:
        raw = yaml.safe_load(path.read_text())
        return Table.model_validate({"name": path.stem, **raw})
    except yaml.YAMLError as e:
        raise TableError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise TableError(f"{path}: {key}: {err['msg']}") from None
