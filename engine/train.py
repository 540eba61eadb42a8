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
import os
import shutil
import sys
import time
from contextlib import contextmanager
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
from engine.optim import OptimConfig, depends_on_total_epochs
from engine.provenance import as_yaml_comment, provenance
from engine.run_folder import RunFolder, changed_inputs
from engine.source_outputs.image_cache import CacheError
from engine.source_outputs import source_configs
from models.finetune import ModelError
from models.network import count_parameters
from models.sources import SourceError, load_source
from pipelines.datasets import DatasetError, build_split, has_own_val

# What bad input raises: each one line naming the file, key or value; the entry points exit 2 on them.
INPUT_ERRORS = (ConfigError, DatasetError, SourceError, CacheError, ModelError)

# Keys that may change when an interrupted run is resumed; anything else would mix two experiments.
# (run.root: a runs tree copied or moved elsewhere holds the same runs.)
RESUMABLE_CHANGES = {"train.epochs", "train.progress", "train.channels_last", "train.resume", "train.checkpoint_every",
                     "train.eval_every", "data.workers", "run.root"}


def make_accelerator(cfg: Config, run_dir: Path) -> Accelerator:
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # cpu=True where there is no GPU: Accelerate then forms a gloo group from torchrun's variables.
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=precision,
                       gradient_accumulation_steps=cfg.train.grad_accum, log_with="tensorboard",
                       project_dir=str(run_dir))


# ---------------------------------------------------------------- reruns: refuse what would corrupt a run

def check_rerun(cfg: Config, run: RunFolder) -> dict | None:
    """What starting `cfg` in `run` means: None to train (from scratch or resuming), the stored summary when
    the run is finished (nothing is rewritten), or a ConfigError when resuming could not end as an
    uninterrupted run of `cfg` would."""
    trained = checkpoint.trainer_state(run.checkpoints)
    summary = json.loads(run.summary_file.read_text()) if run.summary_file.exists() else None
    if trained is None and summary is None:
        return None  # nothing kept (a start that failed early leaves at most files that are overwritten)
    new_run = f"start a new run with run.name={free_run_name(cfg)}"
    if cfg.train.resume == "never":
        raise ConfigError(f"{run.path}: already holds a run; set train.resume=auto to continue it, or {new_run}")
    stored_file = run.path / "config.yaml"
    stored = _flatten(yaml.safe_load(stored_file.read_text())) if stored_file.exists() else {}
    if changed := changed_settings(stored_file, cfg):
        raise ConfigError(f"{stored_file}: the run there was made with other settings ({', '.join(changed[:3])}); "
                          f"{new_run}, or rerun with its settings to continue it")
    done = trained["epoch"] if trained else summary["epochs"]
    if summary is not None and summary.get("epochs") == cfg.train.epochs:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"{run.path}: already finished ({primary_metric_line(summary)}); nothing to do")
        return summary
    if cfg.train.epochs < done:
        raise ConfigError(f"{run.path}: already trained {done} epochs, more than train.epochs={cfg.train.epochs}; "
                          f"{new_run}")
    before = stored.get("train.epochs", cfg.train.epochs)
    spanning = [key for key, section in optim_sections(cfg) if depends_on_total_epochs(section)]
    if before != cfg.train.epochs and spanning:
        raise ConfigError(f"{run.path}: the {spanning[0]}.schedule (cosine) "
                          f"spans train.epochs={before}; continuing it to {cfg.train.epochs} would not end as a "
                          f"{cfg.train.epochs}-epoch run does; {new_run}")
    return None


def check_processes(cfg: Config, run: RunFolder, world: int) -> None:
    """A launch that did not start the processes it asked for, a batch they cannot share, a resume on
    another process count (the samples each step sees depend on it): one line each, before any work."""
    env = os.environ
    if world == 1 and "ACCELERATE_MIXED_PRECISION" in env and "MASTER_PORT" in env and "WORLD_SIZE" not in env:
        raise ConfigError("accelerate launch asked for several processes but started one (its CPU path needs "
                          "MPI); on a CPU use: torchrun --nproc_per_node N -m engine.train --config ...")
    if cfg.data.batch_size % world:
        raise ConfigError(f"data.batch_size: {cfg.data.batch_size} is not a multiple of the {world} processes")
    trained = checkpoint.trainer_state(run.checkpoints)
    if trained is not None and trained.get("processes", world) != world:
        raise ConfigError(f"{run.path}: was trained by {trained['processes']} process(es), not {world}; resume it "
                          f"with {trained['processes']}, or start a new run with run.name={free_run_name(cfg)}")


def optim_sections(cfg: Config) -> list[tuple[str, OptimConfig]]:
    """Every optimizer section of the config (`optim`, and any a method adds, e.g. method.generator_optim)."""
    found = [("optim", cfg.optim)]
    for name in type(cfg.method).model_fields:
        value = getattr(cfg.method, name)
        if isinstance(value, OptimConfig):
            found.append((f"method.{name}", value))
    return found


def free_run_name(cfg: Config) -> str:
    """`<run.name>-2` (or -3, ...): a name under which nothing has been run yet."""
    base = cfg.run.name or "default"
    n = 2
    while (cfg.run.root / f"{base}-{n}" / f"seed{cfg.seed}").exists():
        n += 1
    return f"{base}-{n}"


@contextmanager
def removed_if_nothing_kept(run: RunFolder, accelerator):
    """A start that fails (or is interrupted) before its first checkpoint leaves no run folder behind."""
    existed = run.path.exists()
    try:
        yield
    except BaseException:
        if not existed and accelerator.is_main_process and checkpoint.trainer_state(run.checkpoints) is None:
            # Close the trackers first: tensorboard's writer thread would otherwise go on writing
            # into the folder while it is removed, and leave part of it behind.
            for tracker in accelerator.trackers:
                tracker.finish()
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def changed_settings(stored_file: Path, cfg: Config, may_differ=RESUMABLE_CHANGES) -> list[str]:
    """Each setting in which `cfg` differs from a run's config.yaml, as "key=<stored> there, <cfg's> now",
    then each source whose weight file changed since the run read it (engine.run_folder.changed_inputs)."""
    stored = _flatten(yaml.safe_load(stored_file.read_text())) if stored_file.exists() else {}
    current = _flatten(cfg.model_dump(mode="json"))
    return [f"{k}={stored.get(k)} there, {current.get(k)} now" for k in sorted(stored.keys() | current.keys())
            if stored.get(k) != current.get(k) and k not in may_differ] + changed_inputs(stored_file.parent)


def _flatten(node, prefix=""):
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in _flatten(child, f"{prefix}{key}.").items()}
    if isinstance(node, list):
        return {k: v for i, child in enumerate(node) for k, v in _flatten(child, f"{prefix}{i}.").items()} or {prefix[:-1]: []}
    return {prefix[:-1]: node}


# ---------------------------------------------------------------- inputs, all checked before any work

def read_inputs(cfg: Config) -> tuple[dict, list]:
    """The splits (train, test, and val when data.val_fraction > 0 or the data set has its own) and the
    sources; every missing or bad input of the config in one error, not one per attempt."""
    problems: list[Exception] = []

    def attempt(read):
        try:
            return read()
        except (DatasetError, SourceError) as e:
            if str(e) not in map(str, problems):
                problems.append(e)

    names = ("train", "test", "val") if cfg.data.val_fraction or has_own_val(cfg.data) else ("train", "test")
    splits = {name: attempt(lambda: build_split(cfg.data, name)) for name in names}
    sources = [attempt(lambda: load_source(source_cfg, i)) for i, source_cfg in enumerate(source_configs(cfg))]
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise DatasetError(f"{len(problems)} inputs missing or unreadable: "
                           + " ".join(f"({i}) {p}" for i, p in enumerate(problems, 1)))
    return splits, sources


# ---------------------------------------------------------------- training

def train(cfg: Config) -> dict:
    run = RunFolder(cfg.run_dir())
    finished = check_rerun(cfg, run)
    if finished is not None:
        return finished
    accelerator = make_accelerator(cfg, run.path)
    check_processes(cfg, run, accelerator.num_processes)
    with removed_if_nothing_kept(run, accelerator):
        return run_training(cfg, run, accelerator)


def run_training(cfg: Config, run: RunFolder, accelerator) -> dict:
    set_seed(cfg.seed)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device

    # Everything that can be wrong with the inputs fails here, before any work.
    splits, sources = read_inputs(cfg)
    train_set, test_set = splits["train"], splits["test"]

    method = build_method(cfg.method)
    method.build(Context(cfg, train_set.num_classes, train_set.multilabel, sources))
    params = parameter_counts(method)
    method.setup(accelerator, cfg.train.epochs)
    networks = method.deployed()

    per_rank_batch = cfg.data.batch_size // world
    # Images or clips: loaders, source outputs (live or cached) and evaluation (engine.data)
    data: Data = build_data(cfg, splits, sources, accelerator)
    exporter = Exporter(accelerator, cfg, train_set, run.checkpoints, networks, data.input_size)
    metric_name = data.metric
    main_metric = f"test/{metric_name}"
    chooser = "val" if "val" in splits else "test"  # the split whose metric picks best.pt

    origin = provenance(device)
    origin["sources"] = {name: provider.origin for name, provider in data.source_outputs.providers.items()}
    if accelerator.is_main_process:
        run.create(as_yaml_comment(origin) + dump_config(cfg))
        run.record_inputs(sources)
    accelerator.wait_for_everyone()
    state = checkpoint.load_training_state(accelerator, run.checkpoints) if cfg.train.resume == "auto" else None
    state = state or {"epoch": 0, "best": None, "best_epoch": None, "train_seconds": 0.0, "processes": world}
    # Each deployed network's best [value, epoch]; a checkpoint from before methods deployed several has only "best".
    state.setdefault("best_of", {name: [state["best"], state["best_epoch"]] if i == 0 else [None, None]
                                 for i, name in enumerate(networks)})
    if accelerator.is_main_process:
        run.truncate_metrics(state["epoch"])
        sizes = " / ".join(f"{len(images)} {name}" for name, images in splits.items())
        print(f"{run.path}: {cfg.model.target} on {train_set.name} ({sizes}), "
              f"sources: {[s.name for s in sources] or 'none'}, method {cfg.method.name}, {world} process(es) on "
              f"{device.type}, batch {per_rank_batch}/process, {accelerator.mixed_precision} precision, "
              f"{data.describe}" + (f", resuming after epoch {state['epoch']}" if state["epoch"] else ""))
    start_tensorboard(accelerator, cfg, origin)

    first_epoch, run_started = state["epoch"], time.perf_counter()
    try:
        for epoch in range(state["epoch"], cfg.train.epochs):
            started = time.perf_counter()
            record = {"epoch": epoch + 1, **method.learning_rates()}
            record.update(train_one_epoch(accelerator, method, data.source_outputs, data.train_loader, epoch,
                                          cfg.train.epochs, cfg.train.progress))
            if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs:
                for split, evaluate in data.evaluators.items():
                    record.update(evaluate_networks(networks, evaluate, split))
            method.end_epoch(record)  # after evaluation: ReduceLROnPlateau reads the validation loss
            state["train_seconds"] += record["train/seconds"]
            state["epoch"] = epoch + 1
            for name in networks:  # each network keeps its own best checkpoint
                key = network_metric(networks, name, metric_name, chooser)
                best = state["best_of"][name]
                if key in record and (best[0] is None or record[key] > best[0]):
                    state["best_of"][name] = [record[key], epoch + 1]
                    exporter.save(name, "best")
            if f"{chooser}/{metric_name}" in record:
                state["best"], state["best_epoch"] = state["best_of"][next(iter(networks))]
            if cfg.train.checkpoint_every and (epoch + 1) % cfg.train.checkpoint_every == 0:
                for name in networks:
                    exporter.save(name, f"epoch_{epoch + 1:03d}")
            record["epoch_seconds"] = time.perf_counter() - started
            accelerator.log({k: v for k, v in record.items() if k != "epoch"}, step=epoch + 1)
            if accelerator.is_main_process:
                run.append_metrics(record)
                tested = (f"{main_metric} {record[main_metric]:.2f}  best ({chooser}) {state['best']:.2f}  "
                          if main_metric in record else "")
                remaining = (cfg.train.epochs - epoch - 1) * (time.perf_counter() - run_started) / (epoch + 1 - first_epoch)
                print(f"epoch {epoch + 1}/{cfg.train.epochs}  loss {record['train/loss']:.4f}  {tested}"
                      f"{record['train/images_per_s']:.0f} img/s  {record['epoch_seconds']:.1f}s  "
                      f"eta {remaining / 60:.1f} min", flush=True)
            checkpoint.save_training_state(accelerator, run.checkpoints, state)
    except KeyboardInterrupt:
        saved = checkpoint.trainer_state(run.checkpoints)  # what is on disk, not what was in progress
        kept = f"after epoch {saved['epoch']}" if saved else "before the first epoch ended"
        raise Interrupted(f"{run.path}: interrupted {kept}; the same command resumes") from None

    accelerator.end_training()
    history = run.metrics() if accelerator.is_main_process else []
    summary = make_summary(cfg, history, state, params, world, accelerator, main_metric, networks, method.REPORTED)
    summary["best"] = best_summary(history, state, main_metric, f"{chooser}/{metric_name}")
    summary["provenance"] = origin
    for name in networks:
        exporter.save(name, "final")
    if accelerator.is_main_process:
        run.write_summary(summary)
        print(f"{run.path}: {primary_metric_line(summary)}")
    return summary


def best_summary(history: list[dict], state: dict, main_metric: str, chosen_on: str) -> dict:
    """The best epoch, the split metric that chose it, and the test metric at that epoch."""
    best = {main_metric: state["best"], "epoch": state["best_epoch"], "chosen_on": chosen_on}
    if chosen_on != main_metric:
        at_best = next((r for r in history if r["epoch"] == state["best_epoch"]), {})
        best.update({chosen_on: state["best"], main_metric: at_best.get(main_metric)})
    return best


def start_tensorboard(accelerator, cfg: Config, origin: dict) -> None:
    """TensorBoard gets the hyperparameters (its HPARAMS tab) and the resolved config and provenance as text."""
    hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
               for k, v in _flatten(cfg.model_dump(mode="json")).items()}
    accelerator.init_trackers("tensorboard", config=hparams)
    if accelerator.is_main_process:
        writer = accelerator.get_tracker("tensorboard", unwrap=True)
        indent = lambda text: "".join(f"    {line}\n" for line in text.splitlines())  # markdown code block
        writer.add_text("config", indent(dump_config(cfg)))
        writer.add_text("provenance", indent(json.dumps(origin, indent=2)))


def parameter_counts(method: Method) -> dict[str, int]:
    """Parameters of the first deployed target, and of everything trained that is not deployed."""
    deployed = [count_parameters(d.network.target) for d in method.deployed().values()]
    trained = sum(count_parameters(net) for net in method.nets.values())
    return {"deployed_target": deployed[0], "training_heads": trained - sum(deployed), "trained": trained}


def network_metric(networks: dict, name: str, metric: str, split: str = "test") -> str:
    """`<split>/<metric>` for a single network; `<split>/<name>/<metric>` when a method deploys several."""
    return f"{split}/{metric}" if len(networks) == 1 else f"{split}/{name}/{metric}"


def evaluate_networks(networks: dict, evaluate, split: str = "test") -> dict[str, float]:
    """Every deployed network on one split (test or val) by `evaluate(network, prefix)` (engine.data). With
    several (DML peers), each under its name, their mean under `<split>/mean/`, and the first (the reported
    one) also as plain `<split>/<metric>`."""
    if len(networks) == 1:
        (deployed,) = networks.values()
        return evaluate(deployed.network, f"{split}/")
    record = {}
    for name, deployed in networks.items():
        record.update(evaluate(deployed.network, f"{split}/{name}/"))
    first = next(iter(networks))
    for key in [k.removeprefix(f"{split}/{first}/") for k in record if k.startswith(f"{split}/{first}/")]:
        record[f"{split}/{key}"] = record[f"{split}/{first}/{key}"]
        if key not in COUNT_KEYS:
            record[f"{split}/mean/{key}"] = sum(record[f"{split}/{n}/{key}"] for n in networks) / len(networks)
    return record


COUNT_KEYS = {"images", "clips", "videos", "val_clips"}  # evaluation sizes, not scores: no mean over networks


class Exporter:
    """Writes deployed networks with what they expect (input size, mean, std) and the class names:
    checkpoints/<stem>.pt for the first network, and checkpoints/<name>/<stem>.pt for each when several."""

    def __init__(self, accelerator, cfg: Config, train_set, folder: Path, networks: dict, input_size):
        self.accelerator, self.folder, self.networks = accelerator, folder, networks
        self.meta = {"num_classes": train_set.num_classes, "mean": cfg.data.mean, "std": cfg.data.std,
                     "input_size": input_size, "class_names": train_set.class_names or None,
                     "multilabel": train_set.multilabel}

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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says what was kept. The entry points exit 130 on it."""


def exit_status(job, *args) -> int:
    """Run an entry point's job: bad input is one line on stderr and exit status 2; Ctrl-C one line and 130."""
    first = int(os.environ.get("RANK", "0")) == 0  # several processes fail alike: one of them says so
    try:
        job(*args)
    except INPUT_ERRORS as e:
        if first:
            print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if first:
            print(str(e) if isinstance(e, Interrupted) else "interrupted; the same command resumes", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="experiment YAML (configs/...)")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value, e.g. train.epochs=2 sources.0.cache=off")
    args = parser.parse_args(argv)
    return exit_status(lambda: train(load_config(args.config, args.overrides)))


if __name__ == "__main__":
    sys.exit(main())
