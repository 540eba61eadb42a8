"""One Accelerate loop for every method, model and device count.

Per batch the loop looks up the sources' outputs and calls `method.training_step` once,
inside `accelerator.accumulate` over everything the method trains; what the method
trains, how it steps and whether source outputs are live or cached is decided before
the loop starts (engine.methods.base).
"""
from __future__ import annotations

import time

import torch

from engine.progress import Progress


def train_one_epoch(accelerator, method, source_outputs, loader, epoch: int, epochs: int,
                    show_progress: bool) -> dict[str, float]:
    method.train()
    sums: dict[str, torch.Tensor] = {}
    seen = torch.zeros((), device=accelerator.device)
    correct = torch.zeros((), device=accelerator.device)
    start = time.perf_counter()
    progress = Progress(len(loader), f"epoch {epoch + 1}/{epochs}",
                        enabled=show_progress and accelerator.is_local_main_process)
    steps = 0
    for batch in loader.epoch(epoch):
        # CUDA graphs (train.compile on a GPU): a new step, whose replay may overwrite the last one's outputs
        torch.compiler.cudagraph_mark_step_begin()
        with accelerator.accumulate(*method.nets.values()):
            loss, terms, logits = method.training_step(batch, source_outputs(batch))
        n = batch["image"].shape[0]
        seen += n
        for name, value in {"loss": loss, **terms}.items():
            sums[name] = sums.get(name, 0) + value.float() * n
        if batch["label"].ndim == 1:
            correct += (logits.argmax(1) == batch["label"]).sum()
        steps += 1
        if progress.update(1):  # reading tensors syncs with the device: only when shown
            rate = float(seen) * accelerator.num_processes / (time.perf_counter() - start)
            accuracy = f"{100 * float(correct / seen):.1f}" if batch["label"].ndim == 1 else "-"
            progress.show(loss=f"{float(loss):.3f}", acc=accuracy, img_s=f"{rate:.0f}")
    progress.close()
    if not steps:
        raise ValueError(f"epoch {epoch + 1}: no training batch (fewer samples than processes?)")
    totals = accelerator.reduce(torch.stack([seen, correct, *sums.values()]), reduction="sum")
    elapsed = time.perf_counter() - start
    record = {f"train/{name}": float(v / totals[0]) for name, v in zip(sums, totals[2:])}
    if batch["label"].ndim == 1:
        record["train/top1"] = 100.0 * float(totals[1] / totals[0])
    record["train/images"] = int(totals[0])
    record["train/images_per_s"] = float(totals[0]) / elapsed
    record["train/seconds"] = elapsed
    return record
