"""Which run folder a config trains in, so that a rerun never corrupts a run and never traps the user.

A run folder belongs to one set of settings. `choose_run` looks at runs/<name>/seed<k>, then <name>-2, -3, ...:
  - a folder holding a run of the same settings: it is resumed (interrupted) or reported (finished);
  - a folder holding a run that this config cannot continue as one uninterrupted run (other settings, a
    source whose weights changed, fewer epochs, a cosine schedule spanning other epochs) is left untouched;
  - the first free number gets a fresh run, and one line says why the config's own folder was not used.
`run.resume: false` always starts a fresh numbered folder. Settings marked resumable in the config schema
(engine.config.resumable_keys: more epochs of a multistep schedule, the progress bar, workers, ...) may
differ from the run being continued.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from engine import checkpoint
from engine.config import Config, ConfigError, at_default, resumable_keys, retired_key
from engine.optim import OptimConfig, depends_on_total_epochs
from engine.run_folder import RunFolder, changed_inputs
from engine.summary import primary_metric_line


def choose_run(cfg: Config) -> tuple[Config, RunFolder, dict | None]:
    """(the config with its run.name as used, its folder, the finished run's summary or None to train)."""
    base = cfg.run.name or "default"
    reason = "run.resume is false" if not cfg.run.resume else None
    for n in range(1, 10_000):
        name = base if n == 1 else f"{base}-{n}"
        candidate = cfg if name == cfg.run.name else cfg.model_copy(update={"run": cfg.run.model_copy(update={"name": name})})
        run = RunFolder(candidate.run_dir())
        if not holds_a_run(run):
            if n > 1 and is_main():
                print(f"{RunFolder(cfg.run_dir()).path}: {reason}; this run goes to {run.path} "
                      f"(run.name={name})", flush=True)
            return candidate, run, None
        if not cfg.run.resume:
            continue
        try:
            return candidate, run, check_rerun(candidate, run)
        except ConfigError as e:
            reason = reason or str(e).split(": ", 1)[1]
    raise ConfigError(f"run.name: {base}-2 ... {base}-9999 all hold runs; choose another run.name")


def holds_a_run(run: RunFolder) -> bool:
    """A training state or a summary is kept there (a start that failed early leaves at most a config)."""
    return checkpoint.trainer_state(run.checkpoints) is not None or run.summary_file.exists()


def check_rerun(cfg: Config, run: RunFolder) -> dict | None:
    """What starting `cfg` in `run` (which holds a run) means: None to resume it, the stored summary when it
    is finished (nothing is rewritten), or a ConfigError saying why resuming could not end as an
    uninterrupted run of `cfg` would."""
    trained = checkpoint.trainer_state(run.checkpoints)
    summary = json.loads(run.summary_file.read_text()) if run.summary_file.exists() else None
    stored_file = run.path / "config.yaml"
    if changed := changed_settings(stored_file, cfg):
        raise ConfigError(f"{stored_file}: holds a run with other settings ({', '.join(changed[:3])})")
    done = trained["epoch"] if trained else summary["epochs"]
    if summary is not None and summary.get("epochs") == cfg.train.epochs:
        if is_main():
            print(f"{run.path}: already finished ({primary_metric_line(summary)}); nothing to do")
        return summary
    if cfg.train.epochs < done:
        raise ConfigError(f"{run.path}: holds a run that already trained {done} epochs, more than "
                          f"train.epochs={cfg.train.epochs}")
    before = flatten(yaml.safe_load(stored_file.read_text())).get("train.epochs", cfg.train.epochs)
    spanning = [key for key, section in optim_sections(cfg) if depends_on_total_epochs(section)]
    if before != cfg.train.epochs and spanning:
        raise ConfigError(f"{run.path}: holds a run whose {spanning[0]}.schedule (cosine) spans "
                          f"train.epochs={before}; continuing it to {cfg.train.epochs} would not end as a "
                          f"{cfg.train.epochs}-epoch run does")
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
                          f"with {trained['processes']}, or start a fresh run with run.resume=false")


def changed_settings(stored_file: Path, cfg: Config, may_differ: set[str] | None = None) -> list[str]:
    """Each setting in which `cfg` differs from a run's config.yaml, as "key=<stored> there, <cfg's> now",
    then each source whose weight file changed since the run read it (engine.run_folder.changed_inputs).
    `may_differ`: the keys not compared (default: the schema's resumable ones). A stored key that the schema
    no longer has where it stood is no setting of `cfg` (engine.config.retired_key); a key the stored config
    lacks (the run was made before it existed) is the same setting when `cfg` holds its default there."""
    may_differ = resumable_keys() if may_differ is None else may_differ
    stored = flatten(yaml.safe_load(stored_file.read_text())) if stored_file.exists() else {}
    current = flatten(cfg.model_dump(mode="json"))
    stored_sections = {k.rsplit(".", n)[0] for k in stored for n in range(1, k.count(".") + 1)}
    return [f"{k}={stored.get(k)} there, {current.get(k)} now" for k in sorted(stored.keys() | current.keys())
            if stored.get(k) != current.get(k) and not any(k == m or k.startswith(m + ".") for m in may_differ)
            and not (k not in current and retired_key(cfg, k))
            and not (k not in stored and k not in stored_sections and at_default(cfg, k))
            ] + changed_inputs(stored_file.parent)


def optim_sections(cfg: Config) -> list[tuple[str, OptimConfig]]:
    """Every optimizer section of the config (`optim`, and any a method adds, e.g. method.generator_optim)."""
    found = [("optim", cfg.optim)]
    for name in type(cfg.method).model_fields:
        value = getattr(cfg.method, name)
        if isinstance(value, OptimConfig):
            found.append((f"method.{name}", value))
    return found


def flatten(node, prefix: str = "") -> dict:
    """A nested config as {"dotted.key": value} (list items by position)."""
    if isinstance(node, dict):
        return {k: v for key, child in node.items() for k, v in flatten(child, f"{prefix}{key}.").items()}
    if isinstance(node, list):
        return {k: v for i, child in enumerate(node) for k, v in flatten(child, f"{prefix}{i}.").items()} or {prefix[:-1]: []}
    return {prefix[:-1]: node}


def is_main() -> bool:
    """Rank 0 (or the only process): the one that speaks."""
    return int(os.environ.get("RANK", "0")) == 0
