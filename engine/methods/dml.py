"""Deep mutual learning (Zhang et al. 2018): peers trained together, each learning the task and
the other peers' predictions.

Per batch, one forward pass per peer; peer k minimises
    task(z_k, y) + T^2 * mean over j != k of KL(p_j || p_k),   p_j = softmax(z_j / T) detached,
with its own optimizer (the `optim` section, one instance per peer). Because the other peers'
predictions are detached, the sum of the peers' losses has, for each peer, exactly that peer's
gradient: one backward serves all. Multi-label (`task_loss: bce`): BCE + binary KL per class.

Peer 0 is `model.target`; `method.peers` lists the others (default: one more `model.target`).
Every peer is evaluated every epoch and exported; the summary reports each and their mean.
The SSKT paper's DML column reports one network of the architecture in its row: peer 0.
"""
from __future__ import annotations

from typing import Annotated, Literal

import torch

from engine.losses import TASK_LOSSES, binary_kd, kd
from engine.methods.base import Deployed, Method, MethodConfig, Step, register_method
from engine.methods.scratch import TaskLoss
from engine.schema import FocalGamma, Temperature, registered
from models.registry import target_names


class DMLConfig(MethodConfig):
    name: Literal["dml"] = "dml"
    task_loss: TaskLoss = "ce"
    peers: list[Annotated[str, registered(target_names, "target")]] | None = None  # default: [model.target]
    temperature: Temperature = 1.0
    focal_gamma: FocalGamma = 2.0

    def check(self, config):
        if config.sources:
            raise ValueError("method.name: dml uses no sources; set sources=[]")
        if self.peers is not None and not self.peers:
            raise ValueError("method.peers: dml needs at least one peer beside model.target")


def mutual_losses(logits: list[torch.Tensor], labels: torch.Tensor, task_loss: str, temperature: float,
                  gamma: float = 2.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(task, mimicry) for each peer; mimicry is the mean KL to the other peers' detached predictions."""
    divergence = binary_kd if task_loss == "bce" else kd
    out = []
    for k, own in enumerate(logits):
        task = TASK_LOSSES[task_loss](own, labels, gamma=gamma)
        mimic = torch.stack([divergence(own, other.detach(), temperature=temperature, reduction="batchmean")
                             for j, other in enumerate(logits) if j != k]).mean()
        out.append((task, mimic))
    return out


@register_method
class DML(Method):
    Config = DMLConfig
    REPORTED = ("The SSKT paper's DML column is the accuracy of the network of the row's architecture: "
                "peer0 (model.target).")

    def build(self, ctx):
        super().build(ctx)
        self.archs = [ctx.config.model.target, *(self.cfg.peers or [ctx.config.model.target])]
        self.nets = {f"peer{k}": self.network(arch, ctx.num_classes) for k, arch in enumerate(self.archs)}

    def configure_optimizers(self):
        return {name: self.optimizer(net, self.ctx.config.optim) for name, net in self.nets.items()}

    def training_step(self, batch, source_outputs):
        with self.accelerator.autocast():
            logits = [net(batch["image"]).logits for net in self.nets.values()]
        parts = mutual_losses(logits, batch["label"], self.cfg.task_loss, self.cfg.temperature, self.cfg.focal_gamma)
        total = sum(task + mimic for task, mimic in parts)
        self.accelerator.backward(total)
        for optimizer in self.optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        terms = {}
        for name, (task, mimic) in zip(self.nets, parts):
            terms[f"{name}/task"], terms[f"{name}/kl"] = task.detach(), mimic.detach()
        return Step(total.detach(), terms, logits[0].detach())

    def deployed(self):
        return {name: Deployed(arch, net) for (name, net), arch in zip(self.nets.items(), self.archs)}
