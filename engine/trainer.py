"""Training one experiment to the end: `train(cfg) -> summary`.

    train(cfg)
      choose_run                  the run folder (engine.reruns): resume, report finished, or a fresh one
      Experiment(cfg, ...)        everything the config makes (engine.experiment)
      Trainer.fit()               per epoch: engine.loop.train_one_epoch, evaluation every train.eval_every
                                  epochs, the method's schedules, then three small objects:
                                    BestCheckpoints   each deployed network's best epoch -> checkpoints/best.pt
                                    Exporter          deployed networks -> best.pt, final.pt, epoch_XXX.pt
                                    EpochLog          metrics.jsonl, TensorBoard and the progress line
                                  and the whole training state (checkpoints/last/) after every epoch
      summary.json                written last: present = finished

Ctrl-C or SIGTERM stops between two steps; the line printed says which state is kept (the one after the last
finished epoch; a partial epoch is lost) and the same command resumes from it.
"""
from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from accelerate.utils import set_seed

from engine import checkpoint
from engine.config import dump_config
from engine.entry import Interrupted, signal_name
from engine.evaluation import evaluate_networks
from engine.experiment import Experiment, make_accelerator
from engine.loop import train_one_epoch
from engine.provenance import as_yaml_comment, provenance
from engine.reruns import check_processes, choose_run, flatten
from engine.run_folder import RunFolder
from engine.summary import best_summary, make_summary, parameter_counts, primary_metric_line


def train(cfg) -> dict:
    cfg, run, finished = choose_run(cfg)
    if finished is not None:
        return finished
    accelerator = make_accelerator(cfg, run.path)
    check_processes(cfg, run, accelerator.num_processes)
    with removed_if_nothing_kept(run, accelerator):
        return Trainer(Experiment(cfg, accelerator), run).fit()


@contextmanager
def removed_if_nothing_kept(run: RunFolder, accelerator):
    """A start that fails (or is interrupted) before its first checkpoint leaves no run folder behind."""
    existed = run.path.exists()
    try:
        yield
    except BaseException as e:
        if not existed and accelerator.is_main_process and checkpoint.trainer_state(run.checkpoints) is None:
            # Close the trackers first: tensorboard's writer thread would otherwise go on writing
            # into the folder while it is removed, and leave part of it behind.
            for tracker in accelerator.trackers:
                tracker.finish()
            shutil.rmtree(run.path, ignore_errors=True)
            if isinstance(e, KeyboardInterrupt):
                how, status = signal_name(e)
                raise Interrupted(f"{run.path}: {how} before the first epoch ended; nothing was kept (the folder "
                                  f"is removed): the same command starts the run again", status) from None
        raise


class Trainer:
    def __init__(self, experiment: Experiment, run: RunFolder):
        self.experiment, self.run, self.cfg = experiment, run, experiment.cfg
        self.accelerator = experiment.accelerator

    def fit(self) -> dict:
        self.start()
        try:
            for epoch in range(self.state["epoch"], self.cfg.train.epochs):
                self.run_epoch(epoch)
        except KeyboardInterrupt as e:
            saved = checkpoint.trainer_state(self.run.checkpoints)  # what is on disk, not what was in progress
            if saved is None:
                raise  # nothing kept yet: removed_if_nothing_kept says so
            how, status = signal_name(e)
            raise Interrupted(f"{self.run.path}: {how}; the state after epoch {saved['epoch']} is saved: the same "
                              f"command resumes from it", status) from None
        return self.finish()

    # ------------------------------------------------------------ start, epoch, finish

    def start(self) -> None:
        cfg, accelerator, experiment, run = self.cfg, self.accelerator, self.experiment, self.run
        set_seed(cfg.seed)
        splits, sources = experiment.splits, experiment.sources  # every input read (each missing one said) first
        self.method = experiment.method
        self.params = parameter_counts(self.method)
        self.networks = self.method.deployed()
        self.metric = experiment.metric
        self.chooser = "val" if "val" in splits else "test"  # the split whose metric picks best.pt
        self.source_outputs, self.loader = experiment.source_outputs, experiment.train_loader
        self.evaluators = experiment.evaluators
        self.origin = provenance(accelerator.device)
        self.origin["sources"] = {name: p.origin for name, p in self.source_outputs.providers.items()}
        self.exporter = Exporter(accelerator, cfg, experiment.train_set, run.checkpoints, self.networks,
                                 experiment.input_size)
        if accelerator.is_main_process:
            run.create(as_yaml_comment(self.origin) + dump_config(cfg))
            run.record_inputs(sources)
        accelerator.wait_for_everyone()
        state = checkpoint.load_training_state(accelerator, run.checkpoints, self.method.schedulers)
        self.state = state or {"epoch": 0, "best": None, "best_epoch": None, "train_seconds": 0.0,
                               "processes": accelerator.num_processes}
        self.best = BestCheckpoints(self.state, self.networks, f"{self.chooser}/{self.metric}", self.exporter)
        self.log = EpochLog(accelerator, run, cfg, self.origin, self.state["epoch"], f"test/{self.metric}", self.chooser)
        if accelerator.is_main_process:
            run.truncate_metrics(self.state["epoch"])
            self.say_what_runs()

    def run_epoch(self, epoch: int) -> None:
        cfg, method = self.cfg, self.method
        started = time.perf_counter()
        record = {"epoch": epoch + 1, **method.learning_rates()}
        record.update(train_one_epoch(self.accelerator, method, self.source_outputs, self.loader, epoch,
                                      cfg.train.epochs, cfg.train.progress))
        if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs:
            for split, evaluate in self.evaluators.items():
                record.update(evaluate_networks(self.networks, evaluate, split))
        method.end_epoch(record)  # after evaluation: ReduceLROnPlateau reads the validation loss
        self.state["train_seconds"] += record["train/seconds"]
        self.state["epoch"] = epoch + 1
        self.best.update(record, epoch + 1)
        if cfg.train.checkpoint_every and (epoch + 1) % cfg.train.checkpoint_every == 0:
            for name in self.networks:
                self.exporter.save(name, f"epoch_{epoch + 1:03d}")
        record["epoch_seconds"] = time.perf_counter() - started
        self.log.epoch(record, self.state["best"])
        checkpoint.save_training_state(self.accelerator, self.run.checkpoints, self.state, method.schedulers)

    def finish(self) -> dict:
        accelerator, run = self.accelerator, self.run
        accelerator.end_training()
        history = run.metrics() if accelerator.is_main_process else []
        main_metric = f"test/{self.metric}"
        summary = make_summary(self.cfg, history, self.state, self.params, accelerator, main_metric, self.networks,
                               self.method.REPORTED, dataset=getattr(self.experiment.train_set, "name", None))
        summary["best"] = best_summary(history, self.state, main_metric, f"{self.chooser}/{self.metric}")
        summary["provenance"] = self.origin
        for name in self.networks:
            self.exporter.save(name, "final")
        if accelerator.is_main_process:
            run.write_summary(summary)
            print(f"{run.path}: {primary_metric_line(summary)}")
        return summary

    def say_what_runs(self) -> None:
        cfg, experiment, accelerator = self.cfg, self.experiment, self.accelerator
        sizes = " / ".join(f"{len(split)} {name}" for name, split in experiment.splits.items())
        resuming = f", resuming after epoch {self.state['epoch']}" if self.state["epoch"] else ""
        print(f"{self.run.path}: {cfg.model.target} on {experiment.train_set.name} ({sizes}), "
              f"sources: {[s.name for s in experiment.sources] or 'none'}, method {cfg.method.name}, "
              f"{accelerator.num_processes} process(es) on {accelerator.device.type}, "
              f"batch {cfg.data.batch_size // accelerator.num_processes}/process, "
              f"{accelerator.mixed_precision} precision, {experiment.describe()}{resuming}", flush=True)


class BestCheckpoints:
    """Each deployed network's best [value, epoch] on the choosing split's metric (kept in the training
    state, so a resumed run goes on from it), exported as best.pt whenever it improves."""

    def __init__(self, state: dict, networks: dict, chosen_on: str, exporter: "Exporter"):
        self.state, self.networks, self.chosen_on, self.exporter = state, networks, chosen_on, exporter
        # A checkpoint from before methods deployed several networks has only "best".
        state.setdefault("best_of", {name: [state["best"], state["best_epoch"]] if i == 0 else [None, None]
                                     for i, name in enumerate(networks)})

    def update(self, record: dict, epoch: int) -> None:
        split, metric = self.chosen_on.split("/", 1)
        for name in self.networks:
            key = self.chosen_on if len(self.networks) == 1 else f"{split}/{name}/{metric}"
            best = self.state["best_of"][name]
            if key in record and (best[0] is None or record[key] > best[0]):
                self.state["best_of"][name] = [record[key], epoch]
                self.exporter.save(name, "best")
        if self.chosen_on in record:
            self.state["best"], self.state["best_epoch"] = self.state["best_of"][next(iter(self.networks))]


class Exporter:
    """Writes deployed networks with what they expect (input size, mean, std) and the class names:
    checkpoints/<stem>.pt for the first network, and checkpoints/<name>/<stem>.pt for each when several."""

    def __init__(self, accelerator, cfg, train_set, folder: Path, networks: dict, input_size):
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


class EpochLog:
    """Each epoch's record: metrics.jsonl, TensorBoard (with the hyperparameters, the resolved config and the
    provenance as text), and one plain line with the test metric, the speed and the time left."""

    def __init__(self, accelerator, run: RunFolder, cfg, origin: dict, first_epoch: int, main_metric: str,
                 chooser: str):
        self.accelerator, self.run, self.epochs = accelerator, run, cfg.train.epochs
        self.first_epoch, self.main_metric, self.chooser = first_epoch, main_metric, chooser
        self.started = time.perf_counter()
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                   for k, v in flatten(cfg.model_dump(mode="json")).items()}
        accelerator.init_trackers("tensorboard", config=hparams)
        if accelerator.is_main_process:
            writer = accelerator.get_tracker("tensorboard", unwrap=True)
            indent = lambda text: "".join(f"    {line}\n" for line in text.splitlines())  # markdown code block
            writer.add_text("config", indent(dump_config(cfg)))
            writer.add_text("provenance", indent(json.dumps(origin, indent=2)))

    def epoch(self, record: dict, best: float | None) -> None:
        epoch = record["epoch"]
        self.accelerator.log({k: v for k, v in record.items() if k != "epoch"}, step=epoch)
        if not self.accelerator.is_main_process:
            return
        self.run.append_metrics(record)
        tested = (f"{self.main_metric} {record[self.main_metric]:.2f}  best ({self.chooser}) {best:.2f}  "
                  if self.main_metric in record else "")
        remaining = (self.epochs - epoch) * (time.perf_counter() - self.started) / (epoch - self.first_epoch)
        print(f"epoch {epoch}/{self.epochs}  loss {record['train/loss']:.4f}  {tested}"
              f"{record['train/images_per_s']:.0f} img/s  {record['epoch_seconds']:.1f}s  "
              f"eta {remaining / 60:.1f} min", flush=True)
