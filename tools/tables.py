"""Named result tables as data: tables/<name>.yaml (rows -> configs, the paper's number per cell).

    title: ...
    metric: test/top1                 # what each cell reports (a row or a cell may say otherwise)
    columns: [KD, DML, SSKT]
    rows:
      - label: CIFAR-10 ResNet-20
        also: [test/top5]             # further metrics shown under the row, without a paper number
        cells:
          KD: {config: configs/cifar10/resnet20_kd.yaml, paper: 91.75, pm: 0.24}
          SSKT: {config: ..., paper: 92.46, pm: 0.15, note: P+I,
                 overrides: [model.head=linear], run: name/of/its/run/folder}

A cell is one experiment: its config, the overrides it needs (then also its own `run`
folder name), and where the paper has one, the paper's number and its +-. A column a row
has no cell for was not in the paper. tools/reproduce.py runs the cells, tools/results.py
collects them; both read tables through this module.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from engine.config import default_run_name

TABLES_DIR = Path(__file__).resolve().parents[1] / "tables"


class TableError(Exception):
    """One line naming the table file and the key at fault."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Cell(Strict):
    config: str
    overrides: list[str] = []
    run: str | None = None  # run folder name under runs/; default: the config's own (engine.config)
    metric: str | None = None  # default: the row's
    paper: float | None = None
    pm: float | None = None  # the paper's +- (its std over runs), where it gave one
    note: str | None = None  # e.g. the source set, "P+I"

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
    cells: dict[str, Cell]


class Table(Strict):
    name: str = ""
    title: str
    metric: str
    protocol: str = ""  # how the paper's numbers were obtained, shown under the title
    columns: list[str]
    rows: list[Row]

    @model_validator(mode="after")
    def _known_columns(self):
        for row in self.rows:
            unknown = set(row.cells) - set(self.columns)
            if unknown:
                raise ValueError(f"row '{row.label}': cells {sorted(unknown)} are not among columns {self.columns}")
        return self

    def metric_of(self, row: Row, column: str) -> str:
        return row.cells[column].metric or row.metric or self.metric

    def cells(self):
        """(row, column, cell) for every cell, in reading order."""
        for row in self.rows:
            for column in self.columns:
                if column in row.cells:
                    yield row, column, row.cells[column]


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
