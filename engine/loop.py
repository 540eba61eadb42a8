"""One Accelerate loop for every method, model and device count.

Per batch the loop looks up the sources' outputs and calls `method.training_step` once,
inside `accelerator.accumulate` over everything the method trains; what the method
trains, how it steps and whether source outputs are live or cached is decided before
the loop starts (engine.methods.base).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm


def train_one_epoch(accelerator, method, source_outputs, loader, epoch: int, epochs: int,
                    show_progress: bool) -> dict[str, float]:
    method.train()
    sums: dict[str, torch.Tensor] = {}
    seen = torch.zeros((), device=accelerator.device)
    correct = torch.zeros((), device=accelerator.device)
    start = time.perf_counter()
    bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{epochs}", unit="step", leave=False,
               disable=not (show_progress and accelerator.is_local_main_process), dynamic_ncols=True)
    steps = 0
    for batch in loader.epoch(epoch):
        with accelerator.accumulate(*method.nets.values()):
            loss, terms, logits = method.training_step(batch, source_outputs(batch))
        n = batch["image"].shape[0]
        seen += n
        for name, value in {"loss": loss, **terms}.items():
            sums[name] = sums.get(name, 0) + value.float() * n
        if batch["label"].ndim == 1:
            correct += (logits.argmax(1) == batch["label"]).sum()
        steps += 1
        bar.update(1)
        if not bar.disable and (steps % 10 == 0 or steps == bar.total):  # reading tensors syncs with the device
            rate = float(seen) * accelerator.num_processes / (time.perf_counter() - start)
            accuracy = f"{100 * float(correct / seen):.1f}" if batch["label"].ndim == 1 else "-"
            bar.set_postfix(loss=f"{float(loss):.3f}", acc=accuracy, img_s=f"{rate:.0f}")
    bar.close()
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


@torch.no_grad()
def evaluate(accelerator, network, loader, metrics, prefix: str = "test/") -> dict[str, float]:
    """Metrics of one network (images in [0, 1] -> ModelOutput or logits) on the test split."""
    network.eval()
    metrics.reset()
    totals = torch.zeros(2, device=accelerator.device)  # images, summed task loss (the plateau schedule's)
    for batch in loader.epoch(0):
        with accelerator.autocast():
            output = network(batch["image"])
        logits = (output.logits if hasattr(output, "logits") else output).float()
        target = batch["label"]
        metrics.update(torch.sigmoid(logits) if target.ndim == 2 else logits, target.long() if target.ndim == 2 else target)
        loss = (F.binary_cross_entropy_with_logits(logits, target.float()) * target.shape[0] if target.ndim == 2
                else F.cross_entropy(logits, target, reduction="sum"))
        totals += torch.stack([torch.tensor(float(target.shape[0]), device=totals.device), loss])
    values = {f"{prefix}{k}": round(100.0 * float(v), 4) for k, v in metrics.compute().items()}
    totals = accelerator.reduce(totals, reduction="sum")
    values[f"{prefix}images"] = int(totals[0])
    values[f"{prefix}loss"] = float(totals[1] / totals[0])
    return values
