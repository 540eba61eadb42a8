"""MAXL, meta auxiliary learning (Liu, Davison and Johns, NeurIPS 2019), after its public code.

Two networks, two optimizers:
- the multi-task network (`model.target` + a linear auxiliary head) learns the primary task and
  an auxiliary task whose labels come from
- the label generator (`method.generator`, default the same architecture), which gives every
  primary class `psi` auxiliary sub-classes: its softmax is masked to the sub-classes of the
  sample's primary class (the hierarchy), so a generated label is a distribution over them.

Per batch (MAXL's public code runs the two updates as two passes over the data; here both
use the same batch, one after the other):
1. multi-task step: task(primary) + aux_weight * focal(auxiliary, generated labels), the labels
   treated as constants;
2. generator step through a one-step look-ahead of the multi-task network,
   theta+ = theta - lr * (grad_theta L_train(theta, phi) + weight_decay * theta + momentum * buffer)
   (the virtual SGD step of MAXL's code), minimising task(primary of theta+) + entropy_weight *
   sum_k pbar_k log pbar_k (pbar: the batch-mean generated label; the regulariser keeps the
   generator from collapsing onto few sub-classes). `lookahead: second_order` differentiates
   through the virtual step (torch.func.functional_call, create_graph); `finite_difference`
   approximates the Hessian-vector product as MAXL's first-order code does:
   d/dphi ~ -lr * (grad_phi L_train(theta + eps v) - grad_phi L_train(theta - eps v)) / (2 eps),
   v = grad_theta+ task(theta+), eps = 0.01 / |v|.
The look-ahead runs on copies of the BatchNorm buffers, so it never moves the running statistics.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt
from torch.func import functional_call

from engine.losses import TASK_LOSSES, soft_focal
from engine.methods.base import Deployed, Method, MethodConfig, Step, register_method
from engine.methods.scratch import TaskLoss
from engine.optim import OptimConfig
from engine.schema import ConfigError, FocalGamma, Weight
from models.registry import build_head

AUX_HEAD = "auxiliary"


def generator_optim_default() -> OptimConfig:
    """MAXL's code: SGD lr 1e-3, weight decay 5e-4, halved every 50 epochs."""
    return OptimConfig(name="sgd", lr=1e-3, momentum=0.0, weight_decay=5e-4, schedule="multistep",
                       milestones=[50, 100, 150], gamma=0.5)


class MAXLConfig(MethodConfig):
    name: Literal["maxl"] = "maxl"
    task_loss: TaskLoss = "focal"  # MAXL's code: focal loss on the primary task too
    focal_gamma: FocalGamma = 2.0
    psi: PositiveInt | list[PositiveInt] = 5  # auxiliary sub-classes per primary class (one number, or one per class)
    aux_weight: Weight = 1.0
    entropy_weight: Weight = 0.2
    lookahead: Literal["second_order", "finite_difference"] = "second_order"
    generator: str | None = None  # label generator architecture (a models.registry target); default model.target
    generator_optim: OptimConfig = Field(default_factory=generator_optim_default)

    def check(self, config):
        if config.sources:
            raise ValueError("method.name: maxl uses no sources; set sources=[]")
        if self.task_loss == "bce":
            raise ValueError("method.task_loss: maxl's hierarchy needs single-label classes (ce or focal)")


def hierarchy_mask(psi: list[int]) -> torch.Tensor:
    """bool [primary classes, sum(psi)]: row c is true on the psi[c] sub-classes of class c."""
    ends = torch.tensor(psi).cumsum(0)
    columns = torch.arange(int(ends[-1]))
    return (columns[None] >= (ends - torch.tensor(psi))[:, None]) & (columns[None] < ends[:, None])


def masked_labels(generator_logits: torch.Tensor, mask_rows: torch.Tensor) -> torch.Tensor:
    """Softmax over each sample's own sub-classes; exactly 0 elsewhere."""
    return torch.softmax(generator_logits.float().masked_fill(~mask_rows, float("-inf")), dim=1)


def negative_entropy(labels: torch.Tensor) -> torch.Tensor:
    """sum_k pbar_k log pbar_k of the batch-mean label (MAXL's regulariser; minimised)."""
    mean = labels.mean(0)
    return (mean * torch.log(mean + 1e-20)).sum()


@register_method
class MAXL(Method):
    Config = MAXLConfig

    def build(self, ctx):
        super().build(ctx)
        if ctx.multilabel:
            raise ConfigError("method.name: maxl needs a single-label data set")
        psi = self.cfg.psi if isinstance(self.cfg.psi, list) else [self.cfg.psi] * ctx.num_classes
        if len(psi) != ctx.num_classes or min(psi) < 1:
            raise ConfigError(f"method.psi: needs one positive count per class ({ctx.num_classes}), got {self.cfg.psi}")
        self.mask = hierarchy_mask(psi)
        aux_classes = sum(psi)
        self.nets = {
            "multitask": self.network(ctx.config.model.target, ctx.num_classes,
                                      lambda target: {AUX_HEAD: build_head("linear", target, aux_classes)}),
            "generator": self.network(self.cfg.generator or ctx.config.model.target, aux_classes),
        }

    def configure_optimizers(self):
        return {"multitask": self.optimizer(self.nets["multitask"], self.ctx.config.optim),
                "generator": self.optimizer(self.nets["generator"], self.cfg.generator_optim)}

    def deployed(self):
        return {"target": Deployed(self.ctx.config.model.target, self.nets["multitask"])}

    # ------------------------------------------------------------ the step

    def generate(self, images, labels) -> torch.Tensor:
        with self.accelerator.autocast():
            logits = self.nets["generator"](images).logits
        return masked_labels(logits, self.mask.to(labels.device)[labels])

    def task(self, logits, labels):
        return TASK_LOSSES[self.cfg.task_loss](logits, labels, gamma=self.cfg.focal_gamma)

    def auxiliary(self, aux_logits, generated):
        return soft_focal(aux_logits, generated, gamma=self.cfg.focal_gamma)

    def training_step(self, batch, source_outputs):
        images, labels = batch["image"], batch["label"]
        net, optimizer = self.nets["multitask"], self.optimizers["multitask"]
        with torch.no_grad():
            generated = self.generate(images, labels)
        with self.accelerator.autocast():
            output = net(images)
        task, aux = self.task(output.logits, labels), self.auxiliary(output.aux[AUX_HEAD], generated)
        loss = task + self.cfg.aux_weight * aux
        self.accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        meta, entropy = self.generator_step(images, labels)
        terms = {"task": task.detach(), "aux": aux.detach(), "meta": meta, "entropy": entropy}
        return Step(loss.detach(), terms, output.logits.detach())

    def generator_step(self, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
        generator, optimizer = self.nets["generator"], self.optimizers["generator"]
        lookahead = self.second_order if self.cfg.lookahead == "second_order" else self.finite_difference
        meta_loss, meta, generated = lookahead(images, labels)
        entropy = negative_entropy(generated)
        self.accelerator.backward(meta_loss + self.cfg.entropy_weight * entropy, inputs=list(generator.parameters()))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return meta.detach(), entropy.detach()

    def lookahead_forward(self, params: dict, images):
        """The multi-task network with `params`, on copies of its buffers."""
        base = self.accelerator.unwrap_model(self.nets["multitask"])
        buffers = {name: b.clone() for name, b in base.named_buffers()}
        with self.accelerator.autocast():
            return functional_call(base, (params, buffers), (images,))

    def train_loss(self, params: dict, images, labels, generated):
        output = self.lookahead_forward(params, images)
        return self.task(output.logits, labels) + self.cfg.aux_weight * self.auxiliary(output.aux[AUX_HEAD], generated)

    def virtual_step(self, params: dict, grads) -> dict:
        """theta - lr * (grad + weight_decay * theta + momentum * buffer), as the multi-task optimizer would step."""
        optimizer = self.optimizers["multitask"]
        group = optimizer.param_groups[0]
        lr, decay, momentum = group["lr"], group["weight_decay"], group.get("momentum", 0.0)
        stepped = {}
        for (name, p), g in zip(params.items(), grads):
            buffer = optimizer.state.get(p, {}).get("momentum_buffer") if momentum else None
            update = g + decay * p + (momentum * buffer if buffer is not None else 0.0)
            stepped[name] = p - lr * update
        return stepped

    # Each look-ahead returns (loss whose generator gradient is the meta-gradient, the look-ahead
    # primary loss, the generated labels that gradient flows through).

    def second_order(self, images, labels):
        params = dict(self.accelerator.unwrap_model(self.nets["multitask"]).named_parameters())
        generated = self.generate(images, labels)
        inner = self.train_loss(params, images, labels, generated)
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        ahead = self.lookahead_forward(self.virtual_step(params, grads), images)
        meta = self.task(ahead.logits, labels)
        return meta, meta, generated

    def finite_difference(self, images, labels):
        params = dict(self.accelerator.unwrap_model(self.nets["multitask"]).named_parameters())
        with torch.no_grad():
            fixed = self.generate(images, labels)
        grads = torch.autograd.grad(self.train_loss(params, images, labels, fixed), list(params.values()))
        with torch.no_grad():
            ahead = {k: v.detach().requires_grad_() for k, v in self.virtual_step(params, grads).items()}
        meta = self.task(self.lookahead_forward(ahead, images).logits, labels)
        v = torch.autograd.grad(meta, list(ahead.values()), allow_unused=True)
        v = [torch.zeros_like(p) if d is None else d for p, d in zip(params.values(), v)]
        eps = 0.01 / torch.cat([d.flatten() for d in v]).norm().clamp_min(1e-12)
        generated = self.generate(images, labels)
        aux = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                shifted = {k: p + sign * eps * d for (k, p), d in zip(params.items(), v)}
                output = self.lookahead_forward(shifted, images)
            aux.append(self.auxiliary(output.aux[AUX_HEAD].detach(), generated))
        lr = self.optimizers["multitask"].param_groups[0]["lr"]
        # Its gradient w.r.t. the generator is -lr * (Hessian-vector product) by finite differences.
        return -lr * self.cfg.aux_weight * (aux[0] - aux[1]) / (2 * eps), meta.detach(), generated
