"""The method contract: a method owns what it trains, its optimizers and its training step.

The engine (engine/train.py) drives every method through the same calls and never asks
which one runs (compare torchdistill's distillation box, Lightning's `configure_optimizers` /
`training_step`):

    method = build_method(cfg.method)           # the method's own config section
    method.build(context)                       # networks it trains: self.nets {name: nn.Module}
    method.setup(accelerator, epochs)           # configure_optimizers(); everything through accelerator.prepare
    step = method.training_step(batch, source_outputs)   # per batch: forward, backward, optimizer steps
    method.end_epoch(record)                    # per epoch, after evaluation: the schedules step
    method.validation_loss(output, batch, source_outputs)  # the training loss on a validation batch
    method.deployed()                           # {name: Deployed(arch, network)}: evaluated every epoch, exported

`LossMethod` is the common case (one target + its heads, one optimizer): a subclass writes
`loss(output, batch, source_outputs) -> (loss, named terms)` and nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from foundation.registry import Registry
from engine.optim import OptimConfig, build_optimizer, build_scheduler
from engine.schema import ConfigError, Strict
from models.finetune import fine_tuning_parameter_groups, load_pretrained_target
from models.network import ModelOutput, TargetWithHeads, is_3d, use_channels_last
from models.registry import build_target

if TYPE_CHECKING:
    from engine.config import Config


class MethodConfig(Strict):
    """Base of every method's config section; `name` picks the section's schema (engine.methods.METHODS)."""
    name: str

    def check(self, config: "Config") -> None:
        """Rules that involve other sections (e.g. how many sources); raise ValueError naming the key."""


@dataclass
class Context:
    """What a method builds its networks from."""
    config: "Config"  # the whole experiment: model, optim, data (mean/std), train
    num_classes: int
    multilabel: bool
    sources: list  # models.sources.FrozenSource, in config order


class Deployed(NamedTuple):
    """A network the engine evaluates every epoch and exports (checkpoints/best.pt, final.pt, ...).

    `network` is the prepared module: called on images in [0, 1] it returns ModelOutput (or
    logits); `accelerator.unwrap_model(network).deployed_state_dict()` is what is exported.
    """
    arch: str
    network: nn.Module


class Step(NamedTuple):
    loss: torch.Tensor  # the total, detached, for logging
    terms: dict[str, torch.Tensor]  # named parts, detached
    logits: torch.Tensor  # the first deployed network's logits on the batch (train accuracy)


# Every module of engine/methods/ registers its method here; the registry imports them on its first lookup.
METHODS: Registry[type["Method"]] = Registry("method", package="engine.methods")


def register_method(cls: type["Method"]) -> type["Method"]:
    """Class decorator: the method's name is the default of its Config's `name` field."""
    name = cls.Config.model_fields["name"].default
    if not isinstance(name, str):
        raise ValueError(f"{cls.__name__}: Config.name needs a default, got {name!r}")
    return METHODS.register(name)(cls)


class Method:
    Config: ClassVar[type[MethodConfig]]
    REPORTED: ClassVar[str] = ""  # for methods deploying several networks: which one a paper's table reports

    def __init__(self, cfg: MethodConfig):
        self.cfg = cfg
        self.nets: dict[str, nn.Module] = {}  # everything trained, by name (prepared after setup)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.accelerator = None

    # ------------------------------------------------------------ what a method defines

    def build(self, ctx: Context) -> None:
        """Create self.nets. Subclasses call super().build(ctx) first."""
        self.ctx = ctx

    def configure_optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, OptimConfig]]:
        """name -> (optimizer over some of self.nets' parameters, the config its schedule follows)."""
        raise NotImplementedError

    def training_step(self, batch: dict[str, torch.Tensor], source_outputs: dict[str, torch.Tensor]) -> Step:
        """Forward, `self.accelerator.backward`, optimizer steps and zero_grad, for one batch.

        The engine runs it inside `accelerator.accumulate(*self.nets.values())`, so prepared
        optimizers skip their step until the last micro-batch of an accumulation.
        """
        raise NotImplementedError

    def deployed(self) -> dict[str, Deployed]:
        """The networks to evaluate and export; the first is the one the summary reports."""
        raise NotImplementedError

    def validation_loss(self, output: ModelOutput, batch: dict[str, torch.Tensor],
                        source_outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss this method trains a deployed network with, on a batch it does not train on (the
        network in eval mode, `output` its forward pass): `test/val_total_loss` (train.val_total_loss).
        By default the task's cross-entropy, the same as `test/val_loss`: a method whose other terms need
        more than one network's output on the batch (DML's mimicry of the other peers) keeps it."""
        return F.cross_entropy(output.logits.float(), batch["label"])

    # ------------------------------------------------------------ what the engine calls

    def setup(self, accelerator, epochs: int) -> None:
        """Pass every trained network and optimizer through accelerator.prepare (DDP, mixed precision,
        gradient accumulation, save_state), and make one per-epoch schedule per optimizer (self.schedulers: the
        training state saves and restores them, engine.checkpoint)."""
        self.accelerator = accelerator
        self.set_memory_format(self.ctx.config.train.channels_last)
        if accelerator.num_processes > 1 and accelerator.device.type == "cuda" and self.ctx.config.train.sync_bn:
            self.nets = {k: nn.SyncBatchNorm.convert_sync_batchnorm(m) for k, m in self.nets.items()}
        configured = self.configure_optimizers()
        prepared = accelerator.prepare(*self.nets.values(), *(opt for opt, _ in configured.values()))
        if not isinstance(prepared, tuple):
            prepared = (prepared,)
        self.nets = dict(zip(self.nets, prepared[:len(self.nets)]))
        self.optimizers = dict(zip(configured, prepared[len(self.nets):]))
        for name, (_, optim_cfg) in configured.items():
            self.schedulers[name] = build_scheduler(self.optimizers[name], optim_cfg, epochs)
        mode = compile_mode(self.ctx.config.train.compile, accelerator)
        if mode is not None:
            for net in self.nets.values():
                net.compile(mode=mode)

    def set_memory_format(self, channels_last) -> None:
        """train.channels_last: 2D networks in channels_last (auto and true); 3D ones keep theirs (auto) or refuse (true)."""
        if channels_last is False:
            return
        for name, net in self.nets.items():
            if not is_3d(net):
                use_channels_last(net)
            elif channels_last is True:
                raise ConfigError(f"train.channels_last: true is for 2D targets; {name} is a 3D network "
                                  "(channels_last_3d is not supported): use auto or false")

    def train(self) -> None:
        for net in self.nets.values():
            net.train()

    def end_epoch(self, record: dict) -> None:
        """Step every schedule with the epoch's record (ReduceLROnPlateau reads its metric there)."""
        for scheduler in self.schedulers.values():
            scheduler.step(record)

    def learning_rates(self) -> dict[str, float]:
        """`lr` for the first optimizer, `lr/<name>` for the others."""
        return {("lr" if i == 0 else f"lr/{name}"): opt.param_groups[0]["lr"]
                for i, (name, opt) in enumerate(self.optimizers.items())}

    # ------------------------------------------------------------ shared helpers

    def network(self, arch: str, num_classes: int, heads: dict[str, nn.Module] | None = None) -> TargetWithHeads:
        """A registry target normalising its [0, 1] input with the data's mean/std, plus optional heads.

        A network of `model.target`'s architecture starts from `model.pretrained` when it is set
        (models.finetune: a fresh classifier for `num_classes`); `model.shortcut` reaches the factory.
        """
        data, model = self.ctx.config.data, self.ctx.config.model
        factory_kw = model.factory_kwargs()
        if model.pretrained is not None and arch == model.target:
            target = load_pretrained_target(arch, num_classes, model.pretrained, **factory_kw)
        else:
            target = build_target(arch, num_classes, **factory_kw)
        return TargetWithHeads(target, heads(target) if callable(heads) else (heads or {}), data.mean, data.std)

    def optimizer(self, module: nn.Module, cfg: OptimConfig) -> tuple[torch.optim.Optimizer, OptimConfig]:
        """An optimizer over `module`; for a pretrained TargetWithHeads, 3D-ResNets-PyTorch's fine-tuning
        groups (only `layer{ft_begin_index}`..`layer4` and `fc` get a learning rate; heads when
        `model.train_heads`)."""
        model = self.ctx.config.model
        if isinstance(module, TargetWithHeads) and model.pretrained is not None and model.ft_begin_index:
            params = fine_tuning_parameter_groups(module.target, model.ft_begin_index, heads=module.heads,
                                                  train_heads=model.train_heads)
        else:
            params = module.parameters()
        return build_optimizer(params, cfg), cfg


def compile_mode(setting, accelerator) -> str | None:
    """torch.compile's mode for `train.compile` on this accelerator's device; None: eager.

    `nn.Module.compile` compiles a network in place, so its state dict keeps its own keys (no `_orig_mod.`):
    checkpoints, resumes and exports read the same whether a run compiled or not. CUDA graphs
    ("reduce-overhead") replay a whole step's kernels with one launch; they need one process (DDP's
    gradient hooks run between the kernels) and exist only on CUDA.
    """
    device = accelerator.device.type
    if not (device == "cuda" if setting == "auto" else setting):
        return None
    return "reduce-overhead" if device == "cuda" and accelerator.num_processes == 1 else "default"


class LossMethod(Method):
    """One target network (+ the heads `heads()` adds), one optimizer (the `optim` section), one loss."""

    def heads(self, target: nn.Module) -> dict[str, nn.Module]:
        return {}

    def loss(self, output: ModelOutput, batch: dict[str, torch.Tensor],
             source_outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def build(self, ctx: Context) -> None:
        super().build(ctx)
        self.nets = {"target": self.network(ctx.config.model.target, ctx.num_classes, self.heads)}

    def configure_optimizers(self):
        return {"target": self.optimizer(self.nets["target"], self.ctx.config.optim)}

    def training_step(self, batch, source_outputs) -> Step:
        model, optimizer = self.nets["target"], self.optimizers["target"]
        with self.accelerator.autocast():
            output = model(batch["image"])
        loss, terms = self.loss(output, batch, source_outputs)
        self.accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return Step(loss.detach(), terms, output.logits.detach())

    def validation_loss(self, output, batch, source_outputs):
        return self.loss(output, batch, source_outputs)[0]

    def deployed(self) -> dict[str, Deployed]:
        return {"target": Deployed(self.ctx.config.model.target, self.nets["target"])}
