"""After training: a validation split chooses best.pt, evaluate reproduces the summary from final.pt,
predict names classes from image files, and the run records where its numbers came from."""
from __future__ import annotations

import json
import shlex
import sys

import numpy as np
import pytest
import torch
import yaml
from accelerate.state import AcceleratorState, GradientState
from PIL import Image

from engine import evaluate as evaluate_module
from engine import predict as predict_module
from engine import train as train_module
from engine.config import load_config
from models.registry import build_target
from pipelines.datasets import build_split
from tests.conftest import TINY

FAST = ["data.views=2", "data.batch_size=16", "data.eval_batch_size=16", "data.procedural={label: shape, train_size: 32, test_size: 16}",
        "train.epochs=2", "data.val_fraction=0.25", "run.name=val"]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_val_split_is_a_fixed_part_of_train(tiny_config):
    cfg = load_config(tiny_config, FAST)
    train, val = build_split(cfg.data, "train"), build_split(cfg.data, "val")
    whole = build_split(load_config(tiny_config, FAST[:4]).data, "train")
    assert (len(train), len(val)) == (24, 8) and val.split == "val"
    # Disjoint, together the whole training set, the same samples every time.
    rows = lambda s: {s.images[i].tobytes() for i in range(len(s))}
    assert rows(train) | rows(val) == rows(whole) and not rows(train) & rows(val)
    assert np.array_equal(build_split(cfg.data, "val").images, val.images)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, source_checkpoint):
    """One tiny SSKT run with a validation split, its source outputs cached (auto)."""
    folder = tmp_path_factory.mktemp("after")
    config = folder / "tiny.yaml"
    config.write_text(TINY.format(data=folder / "data", weights=source_checkpoint, runs=folder / "runs",
                                  cache=folder / "source_cache"))
    cfg = load_config(config, [*FAST, "sources.0.cache=auto"])
    assert train_module.main(["--config", str(config), *FAST, "sources.0.cache=auto"]) == 0
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return cfg, cfg.run_dir()


def test_val_split_chooses_best_and_provenance_is_recorded(trained_run):
    cfg, run = trained_run
    summary = json.loads((run / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(m["train/images"] == 24 and m["val/images"] == 8 and m["test/images"] == 16 for m in metrics)
    best = summary["best"]
    assert best["chosen_on"] == "val/top1"
    by_val = max(metrics, key=lambda m: m["val/top1"])  # the first epoch with the highest validation top-1
    assert best["epoch"] == by_val["epoch"] and best["val/top1"] == by_val["val/top1"]
    assert best["test/top1"] == by_val["test/top1"]  # the test metric of the epoch the val split chose

    origin = summary["provenance"]
    assert len(origin["git"]["commit"]) == 40 and isinstance(origin["git"]["dirty"], bool)
    assert origin["command"] == shlex.join(sys.orig_argv) and origin["device"].startswith("cpu")
    assert {"torch", "torchvision", "accelerate", "h5py", "av", "nvidia-dali"} <= set(origin["packages"])
    assert origin["packages"]["torch"] == torch.__version__.split("+")[0]
    assert origin["sources"] == {"object": "built"}
    header = (run / "config.yaml").read_text()
    assert f"# git commit: {origin['git']['commit']}" in header and "# source object: built" in header
    assert yaml.safe_load(header)["optim"]["lr"] == cfg.optim.lr  # still a config load_config reads
    hparams = list((run / "tensorboard").rglob("hparams.yml"))
    assert hparams and yaml.safe_load(hparams[0].read_text())["optim.lr"] == cfg.optim.lr


def test_evaluate_reproduces_the_summary_and_predict_names_the_class(trained_run, tmp_path, capsys):
    cfg, run = trained_run
    summary = json.loads((run / "summary.json").read_text())
    assert evaluate_module.main(["--run", str(run)]) == 0
    written = json.loads((run / "eval_final.json").read_text())
    for key in ("test/top1", "test/top5", "test/images"):
        assert written[key] == pytest.approx(summary["final"][key], abs=1e-6)
    assert evaluate_module.main(["--checkpoint", str(run / "checkpoints" / "best.pt"),
                                 "--config", str(run / "config.yaml")]) == 0
    best = json.loads((run / "checkpoints" / "eval_best.json").read_text())
    assert best["test/top1"] == pytest.approx(summary["best"]["test/top1"], abs=1e-6)

    # An independent computation of the final network on the test images: the registry model, the
    # checkpoint's weights, normalisation by hand.
    deployed = torch.load(run / "checkpoints" / "final.pt", weights_only=True)
    assert deployed["class_names"] and deployed["input_size"] == [32, 32] and deployed["multilabel"] is False
    net = build_target(deployed["arch"], deployed["num_classes"])
    net.load_state_dict(deployed["state_dict"])
    test = build_split(cfg.data, "test")
    images = np.concatenate([test.images, build_split(cfg.data, "train").images])  # some image it gets right
    labels = np.concatenate([test.labels, build_split(cfg.data, "train").labels])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mean, std = (torch.tensor(deployed[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        logits = net.eval().classifier(net.pool(net.forward_stages((x - mean) / std)[-1]))
    right = [i for i in range(len(images)) if logits[i].argmax() == labels[i]]
    assert right, "the tiny model gets no image right"
    paths = []
    for i in (right[0], 0):
        paths.append(tmp_path / f"image{i}.png")
        Image.fromarray(images[i]).save(paths[-1])
    capsys.readouterr()
    assert predict_module.main(["--checkpoint", str(run / "checkpoints" / "final.pt"), *map(str, paths), "--top", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, i in zip(lines, (right[0], 0)):
        top = line.split(": ", 1)[1].split(", ")[0].rsplit(" ", 1)
        assert top[0] == deployed["class_names"][int(logits[i].argmax())]
        assert float(top[1]) == pytest.approx(float(torch.softmax(logits[i], 0).max()), abs=1e-3)
    assert lines[0].startswith(f"{paths[0]}: {test.class_names[labels[right[0]]]} ")  # the right class


def test_evaluate_and_predict_bad_input_is_one_line(tmp_path, capsys):
    assert evaluate_module.main(["--run", str(tmp_path / "nothing")]) == 2
    assert predict_module.main(["--checkpoint", str(tmp_path / "none.pt"), "x.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "nothing/checkpoints/final.pt: checkpoint not found" in err[0] and "none.pt" in err[1]
