"""Collect every finished run (summary.json) under runs/ into the named tables, with the paper's numbers.

    python -m tools.results [--table comparison] [--runs runs] [--out results]       (make results)
    python -m tools.results --table demo --readme README.md      (make results TABLE=demo README=1)
    python -m tools.results --table demo --seeds 0 1 train.epochs=5   (a trial's table: the overrides
                                                                       reproduce ran it with)

For each table (tables/<name>.yaml) and each cell, the runs are the seeds found in
runs/<the cell's run folder>/seed*/summary.json. Per cell: mean ± sample std over
those seeds and their count, of the final-epoch value (the protocol by default) and
of the best epoch (the highest test value over the evaluated epochs, a second column:
the reference code reported it, and it is selected on the test set), beside the paper's
number. A row's metric is the table's unless the row or cell names another (VOC: the
sample-averaged AP the paper calls mAP; 3D: video accuracy), and a row's `also`
metrics follow on their own lines. A cell without a finished run is marked "missing".
A table with a baseline cell (tables/demo.yaml: scratch) shows each other cell's difference
to it, paired by seed (mean ± std of the per-seed differences). `--seeds` keeps those seeds
only; overrides given as for tools/reproduce.py select the trial runs root they made.

`--readme README.md` also replaces the part of the README between `<!-- results:<table> -->`
and `<!-- /results:<table> -->` with the table and links to its plots (atomically; the rest of
the file is untouched).

Writes <out>/<table>.md, <out>/<table>.csv, and PNG plots under <out>/<table>/: bars.png (every
cell's final value, mean ± std over seeds with each seed's dot, beside the paper's number) and one
per row (test metric per epoch, per method: mean line and min-max band over seeds, from each run's
metrics.jsonl); each method keeps its colour in every plot. A trial's table goes to
<out>/trial-<hash>/. Never an emptier table over a fuller one: with no finished run of a table (a fresh
clone), or fewer runs than its CSV was made from, its files (and README part) are left as they are
and a line says so (--replace writes the smaller table).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from foundation.files import atomic_path, replace_marked, write_atomic  # noqa: E402
from tools.reproduce import add_seeds_argument  # noqa: E402
from tools.run_plan import DEFAULT_RUNS, slug, trial_root, with_prerequisites  # noqa: E402
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


def collect_cell(cell: Cell, runs_root: Path, seeds: list[int] | None = None, extra: tuple[str, ...] = ()) -> list[Run]:
    """The cell's finished seeds (those in `seeds` when given), in seed order; a run made with other
    settings than the cell's now is left out, with a line saying so (tools/reproduce.py reruns it)."""
    runs = []
    for summary_file in (Path(runs_root) / cell.run_name).glob("seed*/summary.json"):
        seed = summary_file.parent.name.removeprefix("seed")
        if not seed.isdigit() or (seeds is not None and int(seed) not in seeds):
            continue
        if changed := with_prerequisites(cell.run_name, cell, int(seed), runs_root, extra)[-1].changed_settings():
            print(f"warning: {summary_file.parent} was made with other settings ({'; '.join(changed[:3])}); "
                  "left out (make reproduce runs it again)", file=sys.stderr)
            continue
        summary = json.loads(summary_file.read_text())
        metrics_file = summary_file.with_name("metrics.jsonl")
        history = ([json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
                   if metrics_file.exists() else [])
        runs.append(Run(int(seed), summary, history))
    return sorted(runs, key=lambda run: run.seed)


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

    def text(self, signed: bool = False, empty: str = MISSING) -> str:
        if not self.n:
            return empty
        mean = f"{self.mean:+.2f}" if signed else f"{self.mean:.2f}"
        if self.n == 1:
            return f"{mean} (1 seed)"
        return f"{mean} ± {self.std:.2f} ({self.n} seeds)"


@dataclass
class Line:
    """One line of a table: a row under one metric, each column's runs summarised."""
    row: Row
    metric: str
    primary: bool  # the metric the paper's numbers are in
    cells: dict[str, tuple[Cell, str, list[Run]]]  # column -> (cell, its metric, its runs)
    bases: dict[str, list[Run]] = field(default_factory=dict)  # column -> its baseline cell's runs, if it has one

    def final(self, column: str) -> Stat:
        _, metric, runs = self.cells[column]
        return Stat(tuple(v for v in (r.final(metric) for r in runs) if v is not None))

    def best(self, column: str) -> Stat:
        _, metric, runs = self.cells[column]
        return Stat(tuple(v for v in (r.best(metric) for r in runs) if v is not None))

    def delta(self, column: str) -> Stat:
        """Final value minus the baseline's, per seed both have (paired), over those seeds."""
        _, metric, runs = self.cells[column]
        base = {r.seed: r.final(metric) for r in self.bases.get(column, [])}
        return Stat(tuple(r.final(metric) - base[r.seed] for r in runs
                          if base.get(r.seed) is not None and r.final(metric) is not None))


def collect(table: Table, runs_root: Path, seeds: list[int] | None = None, extra: tuple[str, ...] = ()) -> list[Line]:
    found: dict[str, list[Run]] = {}

    def runs_of(cell: Cell) -> list[Run]:
        if cell.run_name not in found:
            found[cell.run_name] = collect_cell(cell, runs_root, seeds, extra)
        return found[cell.run_name]

    lines = []
    for row in table.rows:
        bases = {c: runs_of(base[1]) for c in row.cells if (base := table.baseline_of(row, c)) is not None}
        primary = row.metric or table.metric
        lines.append(Line(row, primary, True, {c: (cell, table.metric_of(row, c), runs_of(cell))
                                               for c, cell in row.cells.items()}, bases))
        for metric in row.also:
            lines.append(Line(row, metric, False, {c: (cell, metric, runs_of(cell)) for c, cell in row.cells.items()},
                              bases))
    return lines


# ---------------------------------------------------------------- writing

def paper_text(cell: Cell) -> str:
    if cell.paper is None:
        return "–"
    text = f"{cell.paper:g}" + (f" ± {cell.pm:g}" if cell.pm is not None else "")
    return text + (f" ({cell.note})" if cell.note else "")


def metric_name(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def markdown(table: Table, lines: list[Line], runs_root: Path, heading: bool = True) -> str:
    """The table, under its title (`heading`) and its protocol."""
    delta = f"Δ vs {table.baseline_name()}"
    out = [f"## {table.title}", ""] if heading else []
    out += [f"Protocol: **ours** is the test value after the final epoch, mean ± sample std over the seeds found "
            f"under `{runs_root}/` (their count in brackets); **best epoch** is the highest test value over the "
            f"evaluated epochs (selected on the test set). "
            + (f"**{delta}**: the final value minus {table.baseline_name()}'s on the same seed, mean ± std over "
               f"the seeds both have. " if table.baseline else "")
            + f"`{MISSING}`: no finished run yet (`make reproduce TABLE={table.name}`); `–`: no number in the "
            f"paper; blank: not in the paper's table. Lines without a paper number are the same runs under "
            f"another metric.", ""]
    if table.protocol:
        out += [table.protocol, ""]
    rows = grid_rows(table, lines, delta) if table.layout == "grid" else cell_rows(table, lines, delta)
    out += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(cells) + " |" for cells in rows[1:]]
    return "\n".join(out) + "\n"


def grid_rows(table: Table, lines: list[Line], delta: str) -> list[list[str]]:
    """A line per row (and per `also` metric), three or four columns per method: the paper's layout."""
    header = ["row", "metric"]
    for column in table.columns:
        header += [f"{column}: ours, final epoch", f"{column}: ours, best epoch", f"{column}: paper"]
        header += [f"{column}: {delta}"] if table.baseline else []
    rows = [header]
    for line in lines:
        cells = [line.row.label if line.primary else "", metric_name(line.metric)]
        for column in table.columns:
            if column not in line.cells:
                cells += [""] * (4 if table.baseline else 3)
                continue
            cell = line.cells[column][0]
            cells += [line.final(column).text(), line.best(column).text(), paper_text(cell) if line.primary else "–"]
            cells += [line.delta(column).text(signed=True, empty="–")] if table.baseline else []
        rows.append(cells)
    return rows


def cell_rows(table: Table, lines: list[Line], delta: str) -> list[list[str]]:
    """A line per cell (and metric): narrow enough for a README."""
    with_paper = any(cell.paper is not None for _, _, cell in table.cells())
    header = [*table.headers, "metric", "ours, final epoch", "best epoch"]
    header += [delta] if table.baseline else []
    header += ["paper"] if with_paper else []
    rows = [header]
    for line in lines:
        for i, column in enumerate(c for c in table.columns if c in line.cells):
            cell = line.cells[column][0]
            cells = [line.row.label if i == 0 and line.primary else "", column, metric_name(line.metric),
                     line.final(column).text(), line.best(column).text()]
            cells += [line.delta(column).text(signed=True, empty="–")] if table.baseline else []
            cells += [paper_text(cell) if line.primary else "–"] if with_paper else []
            rows.append(cells)
    return rows


CSV_FIELDS = ["table", "row", "column", "metric", "config", "run", "seeds", "final_mean", "final_std",
              "best_mean", "best_std", "delta_mean", "delta_std", "delta_seeds", "paper", "paper_pm", "note"]


def csv_text(table: Table, lines: list[Line]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for line in lines:
        for column in table.columns:
            if column not in line.cells:
                continue
            cell, metric, runs = line.cells[column]
            final, best, delta = line.final(column), line.best(column), line.delta(column)
            writer.writerow({
                "table": table.name, "row": line.row.label, "column": column, "metric": metric,
                "config": cell.config, "run": cell.run_name, "seeds": " ".join(str(r.seed) for r in runs),
                "final_mean": _num(final.mean), "final_std": _num(final.std),
                "best_mean": _num(best.mean), "best_std": _num(best.std),
                "delta_mean": _num(delta.mean), "delta_std": _num(delta.std), "delta_seeds": delta.n or "",
                "paper": _num(cell.paper if line.primary else None),
                "paper_pm": _num(cell.pm if line.primary else None), "note": cell.note or ""})
    return buffer.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def method_colors(table: Table) -> dict[str, str]:
    """One colour per method (column), the same in every plot of the table."""
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {column: to_hex(palette[i % len(palette)]) for i, column in enumerate(table.columns)}


def row_name(table: Table, row: Row) -> str:
    """The row's label, named by the row header in a `cells` table ("auxiliary heads: none")."""
    return f"{table.headers[0]}: {row.label}" if table.layout == "cells" else row.label


def row_title(table: Table, row: Row) -> str:
    """The table's title (its data set and target) and the row's setting."""
    return f"{table.title}\n{row_name(table, row)}"


def plot_row_curves(table: Table, line: Line, path: Path) -> bool:
    """Test metric per epoch, per method: mean over seeds, min-max band. False when no run has a curve."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = method_colors(table)
    drawn = False
    curves = [(column, *line.cells[column][1:]) for column in table.columns if column in line.cells]
    bases = list(line.bases.values())
    baseline = table.baseline.column if table.baseline else None
    if baseline and bases and baseline not in line.cells and any(runs for *_, runs in curves):
        # compare with it in every plot that has a curve of its own
        curves.insert(0, (baseline, line.metric, bases[0]))
    for column, metric, runs in curves:
        by_epoch: dict[int, list[float]] = {}
        for run in runs:
            for epoch, value in run.curve(metric):
                by_epoch.setdefault(epoch, []).append(value)
        if not by_epoch:
            continue
        epochs = sorted(by_epoch)
        role = " (baseline)" if column == baseline and column not in line.cells else ""
        ax.plot(epochs, [statistics.mean(by_epoch[e]) for e in epochs], marker="o", markersize=3,
                color=colors[column], label=f"{column}{role}: mean of {len(runs)} seed{'s' * (len(runs) > 1)}")
        ax.fill_between(epochs, [min(by_epoch[e]) for e in epochs], [max(by_epoch[e]) for e in epochs],
                        color=colors[column], alpha=0.15, linewidth=0)
        drawn = True
    if drawn:
        handles, _ = ax.get_legend_handles_labels()
        band = Patch(color="grey", alpha=0.3, label="band: min–max over the seeds")
        ax.set(title=row_title(table, line.row), xlabel="epoch", ylabel=f"test {metric_name(line.metric)}")
        ax.title.set_fontsize(10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(handles=[*handles, band], fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
                  frameon=False)  # below the axes: it never covers a curve
        fig.tight_layout()
        save_figure(fig, path)
    else:
        plt.close(fig)
    return drawn


def plot_cells(table: Table, lines: list[Line], path: Path) -> None:
    """Every cell's final-epoch value, a panel per row: ours as mean ± std over the seeds (each seed a small
    dot) beside the paper's number ± its std where it has one, and the baseline's mean as a dashed line.
    Points, not bars, on an axis that spans the values, so differences of a point show. The panels of a
    `cells` table (rows are settings of one experiment) share their y-axis; a grid table's rows (data sets,
    metrics) each get their own."""
    primary = [line for line in lines if line.primary]
    colors = method_colors(table)
    with_paper = any(cell.paper is not None for _, _, cell in table.cells())
    across = min(len(primary), 4)
    down = -(-len(primary) // across)
    widths = [len(line.cells) for line in primary[:across]]
    fig, axes = plt.subplots(down, across, squeeze=False, sharey=table.layout == "cells",
                             figsize=(max(6.4, 1.1 * sum(widths) + 1.2 * across), 3.3 * down + 1.0),
                             gridspec_kw={"width_ratios": [max(w, 2) for w in widths]})
    offset = 0.18 if with_paper else 0.0
    for ax, line in zip(axes.flat, primary):
        columns = [column for column in table.columns if column in line.cells]
        for x, column in enumerate(columns):
            stat, cell, color = line.final(column), line.cells[column][0], colors[column]
            if stat.n:
                ax.scatter([x - offset] * stat.n, stat.values, s=12, color=color, alpha=0.45, linewidths=0)
                ax.errorbar(x - offset, stat.mean, yerr=stat.std or 0.0, fmt="o", color=color, capsize=4,
                            markersize=7)
            if cell.paper is not None:
                ax.errorbar(x + offset, cell.paper, yerr=cell.pm or 0.0, fmt="D", color=color,
                            markerfacecolor="white", capsize=4, markersize=6)
        base = next(iter(line.bases.values()), None)
        base_stat = Stat(tuple(v for v in (r.final(line.metric) for r in base or []) if v is not None))
        if base_stat.n and table.baseline.column not in columns:
            ax.axhline(base_stat.mean, color=colors[table.baseline.column], linestyle="--", linewidth=1)
        ax.set_xlim(-0.6, len(columns) - 0.4)
        ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
        for tick, column in zip(ax.get_xticklabels(), columns):
            tick.set_color(colors[column])
        ax.set_title(textwrap.fill(row_name(table, line.row), 40), fontsize=9)
        ax.set_ylabel(f"test {metric_name(line.metric)}", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.flat[len(primary):]:
        ax.set_visible(False)
    legend = [Line2D([], [], marker="o", color="grey", linestyle="", markersize=7,
                     label="ours, final epoch: mean ± std over the seeds (small dots: each seed)")]
    if with_paper:
        legend.append(Line2D([], [], marker="D", color="grey", markerfacecolor="white", linestyle="", markersize=6,
                             label="paper: its mean ± std"))
    if table.baseline and any(line.bases for line in primary):
        legend.append(Line2D([], [], color=colors[table.baseline.column], linestyle="--",
                             label=f"{table.baseline.column} (the baseline): its mean"))
    fig.suptitle(table.title, fontsize=10)
    fig.legend(handles=legend, fontsize=8, loc="lower center", ncol=len(legend), frameon=False)
    fig.tight_layout(rect=(0, 0.06 if down == 1 else 0.03, 1, 1))
    save_figure(fig, path)


class KeptResults(Exception):
    """The table's files were left as they are (no run found, or fewer than they hold): why, in one line;
    `text` is the table that was not written."""

    def __init__(self, message: str, text: str = ""):
        super().__init__(message)
        self.text = text


def runs_found(lines: list[Line]) -> set[tuple[str, int]]:
    """(run folder, seed) of every finished run the table's lines use."""
    return {(cell.run_name, run.seed) for line in lines for cell, _, runs in line.cells.values() for run in runs}


def runs_in_csv(path: Path) -> set[tuple[str, int]]:
    """(run folder, seed) of every run a table's CSV (as csv_text writes it) was made from; none if no such file."""
    if not path.exists():
        return set()
    with open(path, newline="") as f:
        return {(row["run"], int(seed)) for row in csv.DictReader(f) if row.get("run")
                for seed in (row.get("seeds") or "").split() if seed.isdigit()}


def save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_results(table: Table, runs_root: Path, out_dir: Path, seeds: list[int] | None = None,
                  readme: Path | None = None, extra: tuple[str, ...] = (), replace: bool = False) -> dict[str, Path]:
    """The table as Markdown and CSV, and its plots (and its README section); returns what was written.

    Never an emptier table over a fuller one: with no finished run, or fewer runs than the CSV already
    there was made from (a fresh clone's committed results; a run of some seeds only), nothing is written
    (KeptResults says why) unless `replace`."""
    lines = collect(table, runs_root, seeds, extra)
    text = markdown(table, lines, runs_root)
    written = {"markdown": out_dir / f"{table.name}.md", "csv": out_dir / f"{table.name}.csv",
               "bars": out_dir / table.name / "bars.png"}
    found, held = runs_found(lines), runs_in_csv(written["csv"])
    if not found:
        raise KeptResults(f"{table.name}: no finished run under {runs_root}/ (`make reproduce TABLE={table.name}` "
                          f"runs them); {written['markdown']}, {written['csv']} and {out_dir / table.name}/ left as "
                          "they are")
    if len(found) < len(held) and not replace:
        raise KeptResults(f"{table.name}: {written['csv']} was made from {len(held)} runs, the runs found under "
                          f"{runs_root}/ are {len(found)}: the emptier table (above) is not written over it "
                          "(--replace, make results REPLACE=1, writes it)", text)
    written["bars"].parent.mkdir(parents=True, exist_ok=True)
    write_atomic(written["markdown"], text)
    write_atomic(written["csv"], csv_text(table, lines))
    plot_cells(table, lines, written["bars"])
    for line in lines:
        path = written["bars"].with_name(f"curves_{slug(line.row.label)}.png")
        if line.primary and plot_row_curves(table, line, path):
            written[f"curves {line.row.label}"] = path
    if readme is not None:
        replace_section(readme, table.name, readme_section(table, lines, runs_root, written, readme.parent))
        written["readme"] = readme
    return written


# ---------------------------------------------------------------- the README's Results section

def readme_section(table: Table, lines: list[Line], runs_root: Path, written: dict[str, Path], base: Path) -> str:
    plots = [(key.removeprefix("curves "), path) for key, path in written.items() if key.startswith("curves ")]
    links = [f"[{table.name}: ours vs the paper, per cell]({link(written['bars'], base)})"]
    links += [f"[{row}: test {metric_name(table.metric)} per epoch]({link(path, base)})" for row, path in plots]
    return (f"_Generated by `make results TABLE={table.name} README=1` from the runs under `{runs_root}/`; "
            f"do not edit by hand._\n\n" + markdown(table, lines, runs_root, heading=False)
            + "\nPlots: " + " · ".join(links) + "\n")


def link(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def replace_section(readme: Path, name: str, section: str) -> None:
    """Replace what lies between the table's two markers in `readme` (one line if they are not there)."""
    if not replace_marked(readme, f"results:{name}", section):
        raise TableError(f"{readme}: needs one '<!-- results:{name} -->' line and one '<!-- /results:{name} -->' "
                         f"line after it, around the part `make results TABLE={name} README=1` writes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", action="append", help=f"a table ({', '.join(table_names())}); default: all")
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="where the run folders are (default runs/)")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="where tables and plots go (a trial's: <out>/trial-<hash>/)")
    add_seeds_argument(parser, None, "only these seeds (default: every seed found)")
    parser.add_argument("--readme", type=Path, help="also replace each table's marked section of this file")
    parser.add_argument("--replace", action="store_true",
                        help="write the table even over one made from more runs (a re-made table after a change)")
    parser.add_argument("overrides", nargs="*", help="the overrides tools.reproduce ran a trial with (its runs root)")
    args = parser.parse_args(argv)
    runs_root = trial_root(args.runs, args.overrides)
    if args.readme is not None and runs_root != args.runs:
        print(f"error: --readme: a trial's table ({' '.join(args.overrides)}) is not written to {args.readme}",
              file=sys.stderr)
        return 2
    out = args.out if runs_root == args.runs else args.out / runs_root.name  # a trial never overwrites the table
    try:
        tables = [load_table(name) for name in (args.table or table_names())]
        for table in tables:
            try:
                written = write_results(table, runs_root, out, args.seeds, args.readme, tuple(args.overrides),
                                        args.replace)
            except KeptResults as kept:
                print(f"{kept.text}\n{kept}\n" if kept.text else f"{kept}\n")
                continue
            print(written["markdown"].read_text())
            print(f"written: {', '.join(str(p) for p in written.values())}\n")
    except (TableError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
