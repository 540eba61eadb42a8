"""Checkpoints, written so that a half-written one never looks complete.

- `checkpoints/last/`: the whole training state (Accelerate's save_state: model,
  optimizer, scheduler, RNG states) plus `trainer.json` (epoch, best); saved to
  a temporary folder and renamed into place.
- `checkpoints/best.pt`, `final.pt`, `epoch_XXX.pt`: a deployed network only (no heads), as
  {"arch", "num_classes", "state_dict", "mean", "std", "input_size", "class_names", "multilabel"}: what it
  expects (images in [0, 1] at input_size, normalised by mean/std) travels with it, so
  models.sources loads it as a `checkpoint` source (an SSKT source, a KD teacher) as it is.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from foundation.files import atomic_path, publish, write_atomic

STATE_DIR = "last"
TRAINER_FILE = "trainer.json"


def save_training_state(accelerator, folder: Path, trainer_state: dict) -> None:
    final = folder / STATE_DIR
    tmp = folder / f".{STATE_DIR}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        write_atomic(tmp / TRAINER_FILE, json.dumps(trainer_state))
        old = folder / f".{STATE_DIR}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        publish(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def last_state_dir(folder: Path) -> Path | None:
    """The last complete training-state folder, or None if there is none."""
    final = folder / STATE_DIR
    if (final / TRAINER_FILE).exists():
        return final
    old = folder / f".{STATE_DIR}.old"  # a crash between the two renames leaves the previous one here
    return old if (old / TRAINER_FILE).exists() else None


def trainer_state(folder: Path) -> dict | None:
    """The trainer state (epoch, best, ...) of the last complete checkpoint, without restoring it."""
    found = last_state_dir(folder)
    return json.loads((found / TRAINER_FILE).read_text()) if found else None


def load_training_state(accelerator, folder: Path) -> dict | None:
    """The trainer state of the last complete checkpoint, after restoring it; None if there is none."""
    found = last_state_dir(folder)
    if found is None:
        return None
    accelerator.load_state(str(found))
    return json.loads((found / TRAINER_FILE).read_text())


def save_deployed(state_dict: dict, arch: str, num_classes: int, path: Path, *, mean=None, std=None,
                  input_size=None, class_names=None, multilabel: bool | None = None) -> None:
    record = {"arch": arch, "num_classes": num_classes, "state_dict": state_dict}
    extra = {"mean": mean, "std": std, "input_size": input_size, "class_names": class_names}
    record.update({k: list(v) for k, v in extra.items() if v is not None})
    if multilabel is not None:  # sigmoid per class (VOC) rather than one softmax
        record["multilabel"] = bool(multilabel)
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
