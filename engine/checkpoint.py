"""Checkpoints, written so that a half-written one never looks complete.

- `checkpoints/last/`: the whole training state (Accelerate's save_state: models, optimizers, RNG
  states) plus `schedules.pt` (the methods' per-epoch schedules) and `trainer.json` (epoch, best); saved
  to a temporary folder and renamed into place. Every file of it is read back with torch.load's
  weights_only=True (Accelerate's own custom-object files would be unpickled freely: not used).
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

from foundation.errors import UserError
from foundation.files import atomic_path, publish, write_atomic

STATE_DIR = "last"
TRAINER_FILE = "trainer.json"
SCHEDULES_FILE = "schedules.pt"


class CheckpointError(UserError):
    """A training state that cannot be read: one line naming the file and the way out."""


def _unreadable(path: Path, reason: str) -> CheckpointError:
    run = path.parent.parent.parent if path.parent.name in (STATE_DIR, f".{STATE_DIR}.old") else path.parent
    deployed = [p.name for p in (run / "checkpoints" / "best.pt", run / "checkpoints" / "final.pt") if p.exists()]
    kept = f"; its deployed {' and '.join(deployed)} are separate and intact" if deployed else ""
    return CheckpointError(f"{path}: damaged training state ({reason}); start a fresh run with run.resume=false "
                           f"(the damaged run stays in {run}{kept})")


def save_training_state(accelerator, folder: Path, trainer_state: dict, schedules: dict | None = None) -> None:
    """`schedules`: {name: object with state_dict()} (each method's per-epoch schedules)."""
    final = folder / STATE_DIR
    tmp = folder / f".{STATE_DIR}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        torch.save({name: s.state_dict() for name, s in (schedules or {}).items()}, tmp / SCHEDULES_FILE)
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
    if found is None:
        return None
    path = found / TRAINER_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _unreadable(path, f"not the JSON it should be: {e}") from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise _unreadable(path, "no epoch in it")
    return state


def load_training_state(accelerator, folder: Path, schedules: dict | None = None) -> dict | None:
    """The trainer state of the last complete checkpoint, after restoring it (and `schedules`, as saved);
    None if there is none."""
    state = trainer_state(folder)
    if state is None:
        return None
    found = last_state_dir(folder)
    try:
        accelerator.load_state(str(found))
        saved = torch.load(found / SCHEDULES_FILE, map_location="cpu", weights_only=True)
        for name, schedule in (schedules or {}).items():
            schedule.load_state_dict(saved[name])
    except Exception as e:  # safetensors, torch.load and pickle each fail in their own way on a damaged file
        raise _unreadable(_first_unreadable(found) or found, _one_line(e)) from None
    return state


def _first_unreadable(folder: Path) -> Path | None:
    """The first file of a saved state that cannot be read back whole (to name it in the error)."""
    from safetensors.torch import load_file

    for path in sorted(folder.iterdir()):
        try:
            if path.suffix == ".safetensors":
                load_file(path)
            elif path.suffix in (".bin", ".pt"):
                torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            return path
    return None


def _one_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[0][:200] if lines else type(e).__name__)


def save_deployed(state_dict: dict, arch: str, num_classes: int, path: Path, *, mean=None, std=None,
                  input_size=None, class_names=None, multilabel: bool | None = None) -> None:
    record = {"arch": arch, "num_classes": num_classes, "state_dict": state_dict}
    extra = {"mean": mean, "std": std, "input_size": input_size, "class_names": class_names}
    record.update({k: list(v) for k, v in extra.items() if v is not None})
    if multilabel is not None:  # sigmoid per class (VOC) rather than one softmax
        record["multilabel"] = bool(multilabel)
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
