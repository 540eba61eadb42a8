"""Train one experiment:

    python -m engine.train --config configs/demo/sskt.yaml [key=value ...]
    accelerate launch --num_processes 4 -m engine.train --config ... (same code, several GPUs)

Reads and validates the config, data and weight files before any work (a bad one
exits with status 2 and one line naming it), then trains, evaluates after every
epoch and writes everything under runs/<config name>/seed<k>/ (engine.run_folder).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed

from engine import checkpoint
from engine.config import Config, ConfigError, dump_config, load_config
from engine.data import Data, build_data
from engine.loop import train_one_epoch
from engine.methods import Context, Method, build_method
from engine.run_folder import RunFolder
from engine.source_cache import CacheError
from engine.source_outputs import source_configs
from models.finetune import ModelError
from models.network import count_parameters
from models.sources import SourceError, load_sources
from pipelines.datasets import DatasetError, build_split

# What bad input raises: each one line naming the file, key or value; the entry points exit 2 on them.
INPUT_ERRORS = (ConfigError, DatasetError, SourceError, CacheError, ModelError)

# Keys that may change when an interrupted run is resumed; anything else would mix two experiments.
RESUMABLE_CHANGES = {"train.epochs", "train.progress", "train.resume", "train.checkpoint_every", "train.eval_every",
                     "data.workers"}


def make_accelerator(cfg: Config, run_dir: Path) -> Accelerator:
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # cpu=True where there is no GPU: Accelerate then forms a gloo group from torchrun's variables.
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision,
                       gradient_accumulation_steps=cfg.train.grad_accum, log_with="tensorboard",
                       project_dir=str(run_dir))


def check_resumable(cfg: Config, run: RunFolder) -> None:
    stored_file = run.path / "config.yaml"
    if not stored_file.exists():
        return
    stored = _flatten(yaml.safe_load(stored_file.read_text()))
    current = _flatten(cfg.model_dump(mode="json"))
    changed = sorted(k for k in stored.keys() | current.keys()
                     if stored.get(k) != current.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        raise ConfigError(f"{stored_file}: the run there was made with other settings ({', '.join(changed[:3])}); "
                          "set run.name=... for a new run or train.resume=never in a new folder")


def _flatten(node, prefix=""):
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in _flatten(child, f"{prefix}{key}.").items()}
    if isinstance(node, list):
        return {k: v for i, child in enumerate(node) for k, v in _flatten(child, f"{prefix}{i}.").items()} or {prefix[:-1]: []}
    return {prefix[:-1]: node}


def train(cfg: Config) -> dict:
    run = RunFolder(cfg.run_dir())
    if cfg.train.resume == "never" and (run.checkpoints.exists() or run.summary_file.exists()):
        raise ConfigError(f"{run.path}: already holds a run; set train.resume=auto to continue it or run.name=... for a new one")
    check_resumable(cfg, run)
    if run.summary_file.exists():
        summary = json.loads(run.summary_file.read_text())
        if summary.get("epochs") == cfg.train.epochs:
            print(f"{run.path}: already finished ({primary_metric_line(summary)}); nothing to do")
            return summary

    accelerator = make_accelerator(cfg, run.path)
    set_seed(cfg.seed)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device

    # Everything that can be wrong with the inputs fails here, before any work.
    train_set, test_set = build_split(cfg.data, "train"), build_split(cfg.data, "test")
    sources = load_sources(source_configs(cfg))

    method = build_method(cfg.method)
    method.build(Context(cfg, train_set.num_classes, train_set.multilabel, sources))
    params = parameter_counts(method)
    method.setup(accelerator, cfg.train.epochs)
    networks = method.deployed()

    per_rank_batch = cfg.data.batch_size // world
    # Images or clips: loaders, source outputs (live or cached) and evaluation (engine.data)
    data: Data = build_data(cfg, train_set, test_set, sources, accelerator)
    exporter = Exporter(accelerator, cfg, train_set, run.checkpoints, networks, data.input_size)
    metric_name = data.metric
    main_metric = f"test/{metric_name}"

    if accelerator.is_main_process:
        run.create(dump_config(cfg))
    accelerator.wait_for_everyone()
    state = checkpoint.load_training_state(accelerator, run.checkpoints) if cfg.train.resume == "auto" else None
    state = state or {"epoch": 0, "best": None, "best_epoch": None, "train_seconds": 0.0,
                      "best_of": {name: [None, None] for name in networks}}
    if accelerator.is_main_process:
        run.truncate_metrics(state["epoch"])
        print(f"{run.path}: {cfg.model.target} on {train_set.name} ({len(train_set)} train / {len(test_set)} test), "
              f"sources: {[s.name for s in sources] or 'none'}, method {cfg.method.name}, {world} process(es) on "
              f"{device.type}, batch {per_rank_batch}/process, {accelerator.mixed_precision} precision, "
              f"{data.describe}" + (f", resuming after epoch {state['epoch']}" if state["epoch"] else ""))
    accelerator.init_trackers("tensorboard")

    first_epoch, run_started = state["epoch"], time.perf_counter()
    for epoch in range(state["epoch"], cfg.train.epochs):
        started = time.perf_counter()
        record = {"epoch": epoch + 1, **method.learning_rates()}
        record.update(train_one_epoch(accelerator, method, data.source_outputs, data.train_loader, epoch,
                                      cfg.train.epochs, cfg.train.progress))
        if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs:
            record.update(evaluate_networks(networks, data.evaluate))
        method.end_epoch(record)  # after evaluation: ReduceLROnPlateau reads the validation loss
        state["train_seconds"] += record["train/seconds"]
        state["epoch"] = epoch + 1
        for name in networks:  # each network keeps its own best checkpoint
            key = network_metric(networks, name, metric_name)
            best = state["best_of"][name]
            if key in record and (best[0] is None or record[key] > best[0]):
                state["best_of"][name] = [record[key], epoch + 1]
                exporter.save(name, "best")
        if main_metric in record:
            state["best"], state["best_epoch"] = state["best_of"][next(iter(networks))]
        if cfg.train.checkpoint_every and (epoch + 1) % cfg.train.checkpoint_every == 0:
            for name in networks:
                exporter.save(name, f"epoch_{epoch + 1:03d}")
        record["epoch_seconds"] = time.perf_counter() - started
        accelerator.log({k: v for k, v in record.items() if k != "epoch"}, step=epoch + 1)
        if accelerator.is_main_process:
            run.append_metrics(record)
            tested = f"{main_metric} {record[main_metric]:.2f}  best {state['best']:.2f}  " if main_metric in record else ""
            remaining = (cfg.train.epochs - epoch - 1) * (time.perf_counter() - run_started) / (epoch + 1 - first_epoch)
            print(f"epoch {epoch + 1}/{cfg.train.epochs}  loss {record['train/loss']:.4f}  {tested}"
                  f"{record['train/images_per_s']:.0f} img/s  {record['epoch_seconds']:.1f}s  "
                  f"eta {remaining / 60:.1f} min")
        checkpoint.save_training_state(accelerator, run.checkpoints, state)

    accelerator.end_training()
    history = run.metrics() if accelerator.is_main_process else []
    summary = make_summary(cfg, history, state, params, world, accelerator, main_metric, networks, method.REPORTED)
    for name in networks:
        exporter.save(name, "final")
    if accelerator.is_main_process:
        run.write_summary(summary)
        print(f"{run.path}: {primary_metric_line(summary)}")
    return summary


def parameter_counts(method: Method) -> dict[str, int]:
    """Parameters of the first deployed target, and of everything trained that is not deployed."""
    deployed = [count_parameters(d.network.target) for d in method.deployed().values()]
    trained = sum(count_parameters(net) for net in method.nets.values())
    return {"deployed_target": deployed[0], "training_heads": trained - sum(deployed), "trained": trained}


def network_metric(networks: dict, name: str, metric: str) -> str:
    """`test/<metric>` for a single network; `test/<name>/<metric>` when a method deploys several."""
    return f"test/{metric}" if len(networks) == 1 else f"test/{name}/{metric}"


def evaluate_networks(networks: dict, evaluate) -> dict[str, float]:
    """Every deployed network on the test split (`evaluate(network, prefix)`, engine.data). With several
    (DML peers), each under its name, their mean under `test/mean/`, and the first (the reported one)
    also as plain `test/<metric>`."""
    if len(networks) == 1:
        (deployed,) = networks.values()
        return evaluate(deployed.network, "test/")
    record = {}
    for name, deployed in networks.items():
        record.update(evaluate(deployed.network, f"test/{name}/"))
    first = next(iter(networks))
    for key in [k.removeprefix(f"test/{first}/") for k in record if k.startswith(f"test/{first}/")]:
        record[f"test/{key}"] = record[f"test/{first}/{key}"]
        if key not in COUNT_KEYS:
            record[f"test/mean/{key}"] = sum(record[f"test/{n}/{key}"] for n in networks) / len(networks)
    return record


COUNT_KEYS = {"images", "clips", "videos", "val_clips"}  # evaluation sizes, not scores: no mean over networks


class Exporter:
    """Writes deployed networks with what they expect (input size, mean, std) and the class names:
    checkpoints/<stem>.pt for the first network, and checkpoints/<name>/<stem>.pt for each when several."""

    def __init__(self, accelerator, cfg: Config, train_set, folder: Path, networks: dict, input_size):
        self.accelerator, self.folder, self.networks = accelerator, folder, networks
        self.meta = {"num_classes": train_set.num_classes, "mean": cfg.data.mean, "std": cfg.data.std,
                     "input_size": input_size, "class_names": train_set.class_names or None}

    def save(self, name: str, stem: str) -> None:
        if not self.accelerator.is_main_process:
            return
        deployed = self.networks[name]
        state = self.accelerator.unwrap_model(deployed.network).deployed_state_dict()
        paths = [self.folder / name / f"{stem}.pt"] if len(self.networks) > 1 else []
        if name == next(iter(self.networks)):
            paths.append(self.folder / f"{stem}.pt")
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.save_deployed(state, deployed.arch, path=path, **self.meta)


def make_summary(cfg, history, state, params, world, accelerator, main_metric, networks, reported_note="") -> dict:
    last = history[-1] if history else {}
    images = sum(r.get("train/images", 0) for r in history)
    summary = {
        "run": cfg.run.name, "seed": cfg.seed, "dataset": cfg.data.dataset, "target": cfg.model.target,
        "head": cfg.model.head, "method": cfg.method.name, "sources": [s.name for s in cfg.sources],
        "epochs": state["epoch"], "metric": main_metric,
        "final": {k: v for k, v in last.items() if k.startswith("test/")},
        "best": {main_metric: state["best"], "epoch": state["best_epoch"]},
        "images_per_s": images / state["train_seconds"] if state["train_seconds"] else None,
        "train_seconds": state["train_seconds"],
        "wall_seconds": sum(r.get("epoch_seconds", 0) for r in history),
        "parameters": params,
        "processes": world, "device": accelerator.device.type, "precision": accelerator.mixed_precision,
    }
    if len(networks) > 1:
        metric = main_metric.removeprefix("test/")
        first = next(iter(networks))
        summary["networks"] = {
            name: {"arch": d.arch, "final": last.get(f"test/{name}/{metric}"),
                   "best": {main_metric: state["best_of"][name][0], "epoch": state["best_of"][name][1]}}
            for name, d in networks.items()}
        summary["mean_of_networks"] = {main_metric: last.get(f"test/mean/{metric}")}
        summary["reported"] = (f"final and best are {first} ({networks[first].arch}); networks lists each, "
                               f"mean_of_networks their mean. {reported_note}").strip()
    return summary


def primary_metric_line(summary: dict) -> str:
    metric = summary["metric"]
    return (f"final {metric} {summary['final'].get(metric, float('nan')):.2f}, best {summary['best'][metric]:.2f} "
            f"(epoch {summary['best']['epoch']}), {summary['epochs']} epochs")


def exit_status(job, *args) -> int:
    """Run an entry point's job: bad input is one line on stderr and exit status 2."""
    try:
        job(*args)
    except INPUT_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML (configs/...)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.epochs=2 sources.0.cache=off")
    args = parser.parse_args(argv)
    return exit_status(lambda: train(load_config(args.config, args.overrides)))


if __name__ == "__main__":
    sys.exit(main())
