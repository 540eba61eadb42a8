"""make results on a folder of synthetic run folders: the expected numbers, both protocols, markers, CSV, PNGs."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.image import imread

from tests.conftest import ROOT
from tools import results
from tools.tables import load_table

TABLE = """
title: synthetic
metric: test/top1
columns: [KD, SSKT]
rows:
  - label: CIFAR-10 ResNet-20
    cells:
      KD: {config: configs/cifar10/resnet20_kd.yaml, paper: 91.75, pm: 0.24}
      SSKT: {config: configs/cifar10/resnet20_sskt_PI.yaml, paper: 92.46, pm: 0.15, note: P+I}
  - label: VOC ResNet-18
    metric: test/sample_ap
    also: [test/mAP]
    cells:
      KD: {config: configs/voc/resnet18_kd.yaml, paper: 64.11, pm: 0.18}
      SSKT: {config: configs/voc/resnet18_sskt_PI.yaml, overrides: [model.head=linear], run: voc/linear,
             metric: test/sample_ap, paper: 76.42}
"""

# (run folder, metric, one curve per seed); each value is the metric after epochs 1, 2, 3.
RUNS = {
    "cifar10/resnet20_kd": ("test/top1", {0: [50.0, 80.0, 90.0], 1: [55.0, 85.0, 91.5], 2: [52.0, 89.5, 89.0]}),
    "cifar10/resnet20_sskt_PI": ("test/top1", {0: [60.0, 93.0, 92.0]}),
    "voc/linear": ("test/sample_ap", {3: [40.0, 70.0, 75.0], 4: [42.0, 76.0, 74.0]}),
    # voc/resnet18_kd has no run: its cell is missing
}


def write_run(folder, seed, metric, curve, also=None):
    run = folder / f"seed{seed}"
    run.mkdir(parents=True)
    history = []
    for epoch, value in enumerate(curve, 1):
        record = {"epoch": epoch, "train/loss": 1.0 / epoch, metric: value}
        if also:
            record[also] = value - 10
        history.append(record)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    summary = {"seed": seed, "epochs": len(curve), "metric": metric, "final": {k: v for k, v in history[-1].items()
                                                                             if k.startswith("test/")},
               "best": {metric: max(curve), "epoch": int(np.argmax(curve)) + 1}}
    (run / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def written(tmp_path):
    table_file = tmp_path / "synthetic.yaml"
    table_file.write_text(TABLE)
    for name, (metric, seeds) in RUNS.items():
        for seed, curve in seeds.items():
            write_run(tmp_path / "runs" / name, seed, metric, curve, also="test/mAP" if "voc" in name else None)
    (tmp_path / "runs" / "voc" / "resnet18_kd" / "seed0").mkdir(parents=True)  # started, not finished: missing
    assert results.main(["--table", str(table_file), "--runs", str(tmp_path / "runs"), "--out",
                         str(tmp_path / "results")]) == 0
    return tmp_path / "results"


def mean_std(values):
    return np.mean(values), np.std(values, ddof=1)


def test_markdown_table_has_both_protocols_paper_numbers_and_missing_cells(written):
    text = (written / "synthetic.md").read_text()
    rows = {line.split("|")[1].strip() + "/" + line.split("|")[2].strip(): [c.strip() for c in line.split("|")[3:-1]]
            for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert "final epoch" in text and "best epoch" in text and "sample std" in text

    kd_final = mean_std([90.0, 91.5, 89.0])
    kd_best = mean_std([90.0, 91.5, 89.5])  # seed 2 peaked at epoch 2
    cifar = rows["CIFAR-10 ResNet-20/top-1 %"]
    assert cifar[0] == f"{kd_final[0]:.2f} ± {kd_final[1]:.2f} (3 seeds)"
    assert cifar[1] == f"{kd_best[0]:.2f} ± {kd_best[1]:.2f} (3 seeds)"
    assert cifar[2] == "91.75 ± 0.24"
    assert cifar[3:] == ["92.00 (1 seed)", "93.00 (1 seed)", "92.46 ± 0.15 (P+I)"]  # no "± 0.00" for one seed

    voc = rows["VOC ResNet-18/sample-averaged AP % (the paper's mAP)"]
    assert voc[:3] == [results.MISSING, results.MISSING, "64.11 ± 0.18"]
    ap_final, ap_best = mean_std([75.0, 74.0]), mean_std([75.0, 76.0])
    assert voc[3:] == [f"{ap_final[0]:.2f} ± {ap_final[1]:.2f} (2 seeds)", f"{ap_best[0]:.2f} ± {ap_best[1]:.2f} (2 seeds)",
                       "76.42"]
    also = rows["/class-wise mAP %"]  # the same runs under the class-wise mAP, no paper number
    assert also[3] == f"{np.mean([65.0, 64.0]):.2f} ± {np.std([65.0, 64.0], ddof=1):.2f} (2 seeds)"
    assert also[5] == "–"


def test_csv_holds_the_same_numbers(written):
    with open(written / "synthetic.csv") as f:
        lines = list(csv.DictReader(f))
    by_key = {(r["row"], r["column"], r["metric"]): r for r in lines}
    assert len(lines) == 6
    kd = by_key[("CIFAR-10 ResNet-20", "KD", "test/top1")]
    assert float(kd["final_mean"]) == pytest.approx(np.mean([90.0, 91.5, 89.0]), abs=1e-4)
    assert float(kd["final_std"]) == pytest.approx(np.std([90.0, 91.5, 89.0], ddof=1), abs=1e-4)
    assert float(kd["best_mean"]) == pytest.approx(np.mean([90.0, 91.5, 89.5]), abs=1e-4)
    assert kd["seeds"] == "0 1 2" and kd["paper"] == "91.7500" and kd["config"] == "configs/cifar10/resnet20_kd.yaml"
    sskt = by_key[("CIFAR-10 ResNet-20", "SSKT", "test/top1")]
    assert sskt["final_std"] == "" and sskt["seeds"] == "0"
    missing = by_key[("VOC ResNet-18", "KD", "test/sample_ap")]
    assert missing["final_mean"] == "" and missing["seeds"] == "" and missing["paper"] == "64.1100"
    assert by_key[("VOC ResNet-18", "SSKT", "test/sample_ap")]["run"] == "voc/linear"


def test_plots_are_written(written):
    for name in ("bars.png", "curves_cifar_10_resnet_20.png", "curves_voc_resnet_18.png"):
        image = imread(written / "synthetic" / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.01  # something is drawn


def test_curve_band_is_min_to_max_over_seeds(tmp_path):
    run = results.Run(0, {"final": {}}, [{"epoch": 1, "test/top1": 3.0}, {"epoch": 2}, {"epoch": 3, "test/top1": 5.0}])
    assert run.curve("test/top1") == [(1, 3.0), (3, 5.0)]  # epochs without evaluation are left out
    assert run.final("test/top1") == 5.0 and run.best("test/top1") == 5.0


# ---------------------------------------------------------------- a baseline, the cells layout, the README

BASELINE_TABLE = """
title: demo-like
metric: test/top1
layout: cells
headers: [heads, method]
baseline: {row: none, column: scratch}
columns: [scratch, SSKT]
rows:
  - label: none
    cells:
      scratch: {config: configs/demo/scratch.yaml, run: t/scratch}
  - label: linear
    cells:
      SSKT: {config: configs/demo/sskt.yaml, overrides: [model.head=linear], run: t/sskt_linear}
"""
FINALS = {"t/scratch": {0: 80.0, 1: 83.0, 2: 81.0, 5: 70.0}, "t/sskt_linear": {0: 85.0, 1: 84.5, 2: 88.0, 3: 90.0}}

README = """# Project

Intro text, untouched.

<!-- results:demo-like -->
old text that goes
<!-- /results:demo-like -->

## After
Closing text, untouched.
"""


@pytest.fixture
def baseline_table(tmp_path):
    path = tmp_path / "demo-like.yaml"
    path.write_text(BASELINE_TABLE)
    return path


def write_finals(runs):
    for name, finals in FINALS.items():
        for seed, value in finals.items():
            write_run(runs / name, seed, "test/top1", [value - 5, value])


def test_delta_to_the_baseline_is_paired_by_seed(tmp_path, baseline_table):
    write_finals(tmp_path / "runs")
    assert results.main(["--table", str(baseline_table), "--runs", str(tmp_path / "runs"), "--out",
                         str(tmp_path / "out"), "--seeds", "0", "1", "2", "3"]) == 0
    text = (tmp_path / "out" / "demo-like.md").read_text()
    lines = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[3:-1]]
             for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert lines[("heads", "method")] == ["metric", "ours, final epoch", "best epoch", "Δ vs scratch"]
    scratch = mean_std([80.0, 83.0, 81.0])  # seed 5 is not among --seeds
    assert lines[("none", "scratch")] == ["top-1 %", f"{scratch[0]:.2f} ± {scratch[1]:.2f} (3 seeds)",
                                          f"{scratch[0]:.2f} ± {scratch[1]:.2f} (3 seeds)", "–"]
    sskt = mean_std([85.0, 84.5, 88.0, 90.0])
    delta = mean_std([85.0 - 80.0, 84.5 - 83.0, 88.0 - 81.0])  # seed 3 has no scratch run to pair with
    assert lines[("linear", "SSKT")] == ["top-1 %", f"{sskt[0]:.2f} ± {sskt[1]:.2f} (4 seeds)",
                                         f"{sskt[0]:.2f} ± {sskt[1]:.2f} (4 seeds)",
                                         f"+{delta[0]:.2f} ± {delta[1]:.2f} (3 seeds)"]
    assert "paper" not in lines[("heads", "method")]  # no paper number in the table: no such column
    rows = {r["column"]: r for r in csv.DictReader((tmp_path / "out" / "demo-like.csv").open())}
    assert float(rows["SSKT"]["delta_mean"]) == pytest.approx(delta[0], abs=1e-4)
    assert rows["SSKT"]["delta_seeds"] == "3" and rows["scratch"]["delta_mean"] == ""


def test_readme_section_is_replaced_between_its_markers_only(tmp_path, baseline_table):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    args = ["--table", str(baseline_table), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "results"),
            "--readme", str(readme)]
    assert results.main(args) == 0  # no run yet: says so, leaves the README's part as it is
    assert readme.read_text() == README and not (tmp_path / "results").exists()
    before = README.partition("<!-- results:demo-like -->")[0]
    after = README.partition("<!-- /results:demo-like -->")[2]

    write_finals(tmp_path / "runs")
    assert results.main(args) == 0
    text = readme.read_text()
    section = text.partition("<!-- results:demo-like -->\n")[2].partition("<!-- /results:demo-like -->")[0]
    assert text.startswith(before) and text.endswith(after) and text.count("<!-- results:demo-like -->") == 1
    assert "Not yet measured" not in section and "| linear | SSKT | top-1 % |" in section
    assert f"{np.mean([80.0, 83.0, 81.0, 70.0]):.2f}" in section  # every seed found
    assert "(results/demo-like/bars.png)" in section and "(results/demo-like/curves_linear.png)" in section
    assert (tmp_path / "results/demo-like/curves_linear.png").exists()

    readme.write_text("# no markers\n")
    assert results.main(args) == 2  # one line naming the file and the markers; the file is untouched
    assert readme.read_text() == "# no markers\n"
    assert results.main([*args, "train.epochs=1"]) == 2  # a trial's numbers never go to the README


# ---------------------------------------------------------------- never an emptier table

def committed_results(tmp_path):
    """A copy of the repository's committed demo results (table, CSV, plots), as a fresh checkout has them."""
    out = tmp_path / "results"
    (out / "demo").mkdir(parents=True)
    files = [ROOT / "results/demo.md", ROOT / "results/demo.csv", *sorted((ROOT / "results/demo").glob("*.png"))]
    for path in files:
        shutil.copyfile(path, out / path.relative_to(ROOT / "results"))
    return out, {path.relative_to(ROOT / "results"): path.read_bytes() for path in files}


def test_a_fresh_checkout_keeps_its_committed_results(tmp_path, capsys):
    """make results with no runs/ says so and leaves the committed table, CSV, plots and README part alone."""
    out, before = committed_results(tmp_path)
    assert len(before) >= 3 and "(3 seeds)" in before[Path("demo.md")].decode()
    readme = tmp_path / "README.md"
    readme.write_text(README.replace("demo-like", "demo"))
    assert results.main(["--table", "demo", "--runs", str(tmp_path / "runs"), "--out", str(out),
                         "--readme", str(readme)]) == 0
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert readme.read_text() == README.replace("demo-like", "demo")
    assert "demo: no finished run under" in capsys.readouterr().out


def test_fewer_runs_than_the_table_holds_are_not_written_over_it(tmp_path, baseline_table, capsys):
    write_finals(tmp_path / "runs")
    args = ["--table", str(baseline_table), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert results.main(args) == 0  # 8 runs
    table = tmp_path / "out" / "demo-like.md"
    full = table.read_text()
    assert "(4 seeds)" in full
    capsys.readouterr()

    assert results.main([*args, "--seeds", "0-0"]) == 0  # 2 runs: printed, not written
    out = capsys.readouterr().out
    assert "was made from 8 runs, the runs found under" in out and "are 2" in out and "(1 seed)" in out
    assert table.read_text() == full
    assert results.main([*args, "--seeds", "0-0", "--replace"]) == 0
    assert "(1 seed)" in table.read_text() and "(4 seeds)" not in table.read_text()

    replaced = table.read_text()
    trial = results.trial_root(tmp_path / "runs", ["train.epochs=1"])
    write_finals(trial)
    assert results.main([*args, "train.epochs=1"]) == 0  # a trial's table goes beside the table, never over it
    assert table.read_text() == replaced and "(4 seeds)" in (tmp_path / "out" / trial.name / "demo-like.md").read_text()


# ---------------------------------------------------------------- what the plots show

def test_every_plot_gives_a_method_one_colour_and_names_what_it_shows(tmp_path, baseline_table, monkeypatch):
    """Colours by method across plots, legend entries only for what is drawn, the band named, the title naming
    the table and the row's setting, a y-range spanning the values (not from 0)."""
    write_finals(tmp_path / "runs")
    figures = []
    monkeypatch.setattr(results, "save_figure", lambda fig, path: figures.append((path.name, fig)))
    table = load_table(str(baseline_table))
    results.write_results(table, tmp_path / "runs", tmp_path / "out")
    drawn = dict(figures)
    colors = results.method_colors(table)
    assert colors["scratch"] != colors["SSKT"]

    curves = drawn["curves_linear.png"].axes[0]
    assert curves.get_title() == "demo-like\nheads: linear"
    lines = {line.get_label(): to_hex(line.get_color()) for line in curves.get_lines()}
    assert lines == {"scratch (baseline): mean of 4 seeds": colors["scratch"], "SSKT: mean of 4 seeds": colors["SSKT"]}
    legend = [t.get_text() for t in curves.get_legend().get_texts()]
    assert legend[-1] == "band: min–max over the seeds"
    assert to_hex(drawn["curves_none.png"].axes[0].get_lines()[0].get_color()) == colors["scratch"]

    panels = drawn["bars.png"]
    legend = [t.get_text() for t in panels.legends[0].get_texts()]  # no paper entry: none in the table
    assert legend == ["ours, final epoch: mean ± std over the seeds (small dots: each seed)",
                      "scratch (the baseline): its mean"]
    none, linear = panels.axes
    assert none.get_title() == "heads: none" and linear.get_title() == "heads: linear"
    low, high = linear.get_ylim()  # one y-range for the settings of one experiment, spanning the values
    values = [v for seeds in FINALS.values() for v in seeds.values()]
    assert none.get_ylim() == (low, high)
    assert min(values) - 5 < low < min(values) and max(values) < high < max(values) + 5
    assert [to_hex(t.get_color()) for t in none.get_xticklabels() + linear.get_xticklabels()] == \
        [colors["scratch"], colors["SSKT"]]
    assert to_hex(linear.get_lines()[-1].get_color()) == colors["scratch"]  # the baseline's mean, dashed
    assert linear.get_lines()[-1].get_ydata()[0] == pytest.approx(np.mean(list(FINALS["t/scratch"].values())))


def test_paper_numbers_get_a_legend_entry_where_the_table_has_them(written, monkeypatch):
    figures = []
    monkeypatch.setattr(results, "save_figure", lambda fig, path: figures.append(fig))
    table = load_table(str(written.parent / "synthetic.yaml"))
    results.plot_cells(table, results.collect(table, written.parent / "runs"), written / "unused.png")
    legend = [t.get_text() for t in figures[0].legends[0].get_texts()]
    assert legend == ["ours, final epoch: mean ± std over the seeds (small dots: each seed)", "paper: its mean ± std"]
    cifar, voc = figures[0].axes  # rows of a grid table (data sets, metrics): each its own y-range
    assert cifar.get_ylim()[0] > 85 and voc.get_ylim()[1] < 85
