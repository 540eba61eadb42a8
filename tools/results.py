"""Collect every finished run (summary.json) under runs/ into the named tables, with the paper's numbers.

    python -m tools.results [--table comparison] [--runs runs] [--out results]       (make results)

For each table (tables/<name>.yaml) and each cell, the runs are the seeds found in
runs/<the cell's run folder>/seed*/summary.json. Per cell: mean ± sample std over
those seeds and their count, of the final-epoch value (the protocol by default) and
of the best epoch (the highest test value over the evaluated epochs, a second column:
the reference code reported it, and it is selected on the test set), beside the paper's
number. A row's metric is the table's unless the row or cell names another (VOC: the
sample-averaged AP the paper calls mAP; 3D: video accuracy), and a row's `also`
metrics follow on their own lines. A cell without a finished run is marked "missing".

Writes <out>/<table>.md, <out>/<table>.csv, and PNG plots under <out>/<table>/:
one per row (test metric per epoch, per method: mean line and min-max band over seeds,
from each run's metrics.jsonl) and bars.png (ours vs the paper, per cell).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from tools.reproduce import DEFAULT_RUNS, slug  # noqa: E402
from tools.tables import Cell, Row, Table, TableError, load_table, table_names  # noqa: E402

MISSING = "missing"
METRIC_NAMES = {
    "test/top1": "top-1 %",
    "test/top5": "top-5 %",
    "test/mAP": "class-wise mAP %",
    "test/sample_ap": "sample-averaged AP % (the paper's mAP)",
    "test/video_top1": "video top-1 %",
    "test/clip_top1": "clip top-1 %",
}


# ---------------------------------------------------------------- collecting

@dataclass
class Run:
    """One finished seed of a cell: its summary and its per-epoch history."""
    seed: int
    summary: dict
    history: list[dict] = field(default_factory=list)

    def curve(self, metric: str) -> list[tuple[int, float]]:
        return [(r["epoch"], r[metric]) for r in self.history if r.get(metric) is not None]

    def final(self, metric: str) -> float | None:
        value = self.summary.get("final", {}).get(metric)
        if value is None and self.curve(metric):
            value = self.curve(metric)[-1][1]
        return value

    def best(self, metric: str) -> float | None:
        curve = self.curve(metric)
        if curve:
            return max(v for _, v in curve)
        return self.summary.get("best", {}).get(metric)


def collect_cell(cell: Cell, runs_root: Path) -> list[Run]:
    runs = []
    for summary_file in sorted((Path(runs_root) / cell.run_name).glob("seed*/summary.json")):
        summary = json.loads(summary_file.read_text())
        metrics_file = summary_file.with_name("metrics.jsonl")
        history = ([json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
                   if metrics_file.exists() else [])
        runs.append(Run(int(summary_file.parent.name.removeprefix("seed")), summary, history))
    return runs


@dataclass(frozen=True)
class Stat:
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None

    def text(self) -> str:
        if not self.n:
            return MISSING
        if self.n == 1:
            return f"{self.mean:.2f} (1 seed)"
        return f"{self.mean:.2f} ± {self.std:.2f} ({self.n} seeds)"


@dataclass
class Line:
    """One line of a table: a row under one metric, each column's runs summarised."""
    row: Row
    metric: str
    primary: bool  # the metric the paper's numbers are in
    cells: dict[str, tuple[Cell, str, list[Run]]]  # column -> (cell, its metric, its runs)

    def final(self, column: str) -> Stat:
        _, metric, runs = self.cells[column]
        return Stat(tuple(v for v in (r.final(metric) for r in runs) if v is not None))

    def best(self, column: str) -> Stat:
        _, metric, runs = self.cells[column]
        return Stat(tuple(v for v in (r.best(metric) for r in runs) if v is not None))


def collect(table: Table, runs_root: Path) -> list[Line]:
    lines = []
    for row in table.rows:
        runs = {column: collect_cell(cell, runs_root) for column, cell in row.cells.items()}
        primary = row.metric or table.metric
        lines.append(Line(row, primary, True, {c: (cell, table.metric_of(row, c), runs[c])
                                               for c, cell in row.cells.items()}))
        for metric in row.also:
            lines.append(Line(row, metric, False, {c: (cell, metric, runs[c]) for c, cell in row.cells.items()}))
    return lines


# ---------------------------------------------------------------- writing

def paper_text(cell: Cell) -> str:
    if cell.paper is None:
        return "–"
    text = f"{cell.paper:g}" + (f" ± {cell.pm:g}" if cell.pm is not None else "")
    return text + (f" ({cell.note})" if cell.note else "")


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def markdown(table: Table, lines: list[Line], runs_root: Path) -> str:
    header = ["row", "metric"]
    for column in table.columns:
        header += [f"{column}: ours, final epoch", f"{column}: ours, best epoch", f"{column}: paper"]
    out = [f"## {table.title}", "",
           f"Protocol: **ours** is the test value after the final epoch, mean ± sample std over the seeds found "
           f"under `{runs_root}/` (their count in brackets); **best epoch** is the highest test value over the "
           f"evaluated epochs (selected on the test set). `{MISSING}`: no finished run yet "
           f"(`make reproduce TABLE={table.name}`); `–`: no number in the paper; blank: not in the paper's table. Lines without a paper number "
           f"are the same runs under another metric.", ""]
    if table.protocol:
        out += [table.protocol, ""]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for line in lines:
        cells = [line.row.label if line.primary else "", metric_name(line.metric)]
        for column in table.columns:
            if column not in line.cells:
                cells += ["", "", ""]
                continue
            cell = line.cells[column][0]
            cells += [line.final(column).text(), line.best(column).text(), paper_text(cell) if line.primary else "–"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


CSV_FIELDS = ["table", "row", "column", "metric", "config", "run", "seeds", "final_mean", "final_std",
              "best_mean", "best_std", "paper", "paper_pm", "note"]


def csv_text(table: Table, lines: list[Line]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for line in lines:
        for column in table.columns:
            if column not in line.cells:
                continue
            cell, metric, runs = line.cells[column]
            final, best = line.final(column), line.best(column)
            writer.writerow({
                "table": table.name, "row": line.row.label, "column": column, "metric": metric,
                "config": cell.config, "run": cell.run_name, "seeds": " ".join(str(r.seed) for r in runs),
                "final_mean": _num(final.mean), "final_std": _num(final.std),
                "best_mean": _num(best.mean), "best_std": _num(best.std),
                "paper": _num(cell.paper if line.primary else None),
                "paper_pm": _num(cell.pm if line.primary else None), "note": cell.note or ""})
    return buffer.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def plot_row_curves(table: Table, line: Line, path: Path) -> bool:
    """Test metric per epoch, per method: mean over seeds, min-max band. False when no run has a curve."""
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for column in table.columns:
        if column not in line.cells:
            continue
        _, metric, runs = line.cells[column]
        by_epoch: dict[int, list[float]] = {}
        for run in runs:
            for epoch, value in run.curve(metric):
                by_epoch.setdefault(epoch, []).append(value)
        if not by_epoch:
            continue
        epochs = sorted(by_epoch)
        mean = [statistics.mean(by_epoch[e]) for e in epochs]
        (drawn_line,) = ax.plot(epochs, mean, label=f"{column} ({len(runs)} seed{'s' * (len(runs) > 1)})")
        ax.fill_between(epochs, [min(by_epoch[e]) for e in epochs], [max(by_epoch[e]) for e in epochs],
                        color=drawn_line.get_color(), alpha=0.2, linewidth=0)
        drawn = True
    if drawn:
        ax.set(title=f"{table.name}: {line.row.label}", xlabel="epoch", ylabel=f"test {metric_name(line.metric)}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def plot_bars(table: Table, lines: list[Line], path: Path) -> None:
    """Per row and method: ours (final epoch, mean ± std) beside the paper's number (± its std)."""
    primary = [line for line in lines if line.primary]
    width = 0.8 / (2 * len(table.columns))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(primary) * len(table.columns) / 2), 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, column in enumerate(table.columns):
        ours, ours_err, paper, paper_err = [], [], [], []
        for line in primary:
            stat = line.final(column) if column in line.cells else Stat(())
            cell = line.cells[column][0] if column in line.cells else None
            ours.append(stat.mean if stat.n else math.nan)
            ours_err.append(stat.std or 0.0)
            paper.append(cell.paper if cell is not None and cell.paper is not None else math.nan)
            paper_err.append(cell.pm or 0.0 if cell is not None else 0.0)
        x = [i + (2 * j - len(table.columns) + 0.5) * width for i in range(len(primary))]
        color = colors[j % len(colors)]
        ax.bar(x, ours, width, yerr=ours_err, color=color, label=f"{column} (ours)", capsize=2)
        ax.bar([v + width for v in x], paper, width, yerr=paper_err, color=color, alpha=0.35, hatch="//",
               label=f"{column} (paper)", capsize=2)
    ax.set_xticks(range(len(primary)), [line.row.label for line in primary], rotation=30, ha="right", fontsize=8)
    ax.set(title=table.title, ylabel="test % (final epoch; metric per row: see the table)")
    ax.legend(fontsize=7, ncol=len(table.columns))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(table: Table, runs_root: Path, out_dir: Path) -> dict[str, Path]:
    """The table as Markdown and CSV, and its plots; returns what was written."""
    lines = collect(table, runs_root)
    plots = out_dir / table.name
    plots.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out_dir / f"{table.name}.md", "csv": out_dir / f"{table.name}.csv",
               "bars": plots / "bars.png"}
    written["markdown"].write_text(markdown(table, lines, runs_root))
    written["csv"].write_text(csv_text(table, lines))
    plot_bars(table, lines, written["bars"])
    for line in lines:
        path = plots / f"curves_{slug(line.row.label)}.png"
        if line.primary and plot_row_curves(table, line, path):
            written[f"curves {line.row.label}"] = path
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", action="append", help=f"a table ({', '.join(table_names())}); default: all")
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="where the run folders are (default runs/)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="where tables and plots go")
    args = parser.parse_args(argv)
    try:
        tables = [load_table(name) for name in (args.table or table_names())]
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for table in tables:
        written = write_results(table, args.runs, args.out)
        print(written["markdown"].read_text())
        print(f"written: {', '.join(str(p) for p in written.values())}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
