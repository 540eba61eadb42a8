"""Loss functions, by name. Task losses compare logits with labels; auxiliary
losses compare a head's logits with a source's logits.

`reduction` for the auxiliary distribution losses:
- "batchmean": sum over classes, mean over the batch (the textbook KL);
- "mean": mean over batch x classes, PyTorch's default `KLDivLoss` reduction that
  the SSKT reference used, which divides the term by the source's class count.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from foundation.registry import Registry


def _reduce(per_element: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_element.mean()
    if reduction == "batchmean":
        return per_element.sum() / per_element.shape[0]
    raise ValueError(f"unknown reduction {reduction!r}")


def cross_entropy(logits, labels, **_):
    return F.cross_entropy(logits.float(), labels)


def focal(logits, labels, gamma: float = 2.0, **_):
    """Lin et al. 2017: down-weights well-classified samples by (1 - p_true)^gamma."""
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1)
    return (-(1 - log_p.exp()) ** gamma * log_p).mean()


def binary_cross_entropy(logits, targets, **_):
    """Multi-label (VOC): one sigmoid per class, mean over batch x classes."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


def kd(student, teacher, temperature: float = 3.0, reduction: str = "batchmean", **_):
    """Hinton et al.: KL(teacher_T || student_T) * T^2."""
    t = temperature
    log_q = F.log_softmax(student.float() / t, dim=1)
    p = F.softmax(teacher.float() / t, dim=1)
    per_element = p * (torch.log(p.clamp_min(1e-12)) - log_q)
    return _reduce(per_element, reduction) * t * t


def soft_cross_entropy(student, teacher, temperature: float = 3.0, reduction: str = "batchmean", **_):
    """Cross-entropy against the teacher's softened distribution, times T^2 (KD without the teacher's
    entropy): the SSKT reference's `ce` auxiliary loss."""
    t = temperature
    per_element = -F.softmax(teacher.float() / t, dim=1) * F.log_softmax(student.float() / t, dim=1)
    return _reduce(per_element, reduction) * t * t


def soft_focal(logits, soft_targets, gamma: float = 2.0, reduction: str = "batchmean"):
    """Focal loss against a soft target distribution y: sum_k -y_k (1 - p_k)^gamma log p_k per sample,
    mean over the batch by default (MAXL's auxiliary loss)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return _reduce(-(soft_targets * (1 - log_p.exp()) ** gamma * log_p), reduction)


def soft_focal_aux(student, teacher, temperature: float = 3.0, reduction: str = "batchmean", gamma: float = 2.0, **_):
    """The SSKT reference's `focal` auxiliary loss: focal weights on the softened source distribution, times T^2."""
    t = temperature
    return soft_focal(student / t, F.softmax(teacher.float() / t, dim=1), gamma, reduction) * t * t


def hard_pseudo_label(loss):
    """Turn a label loss into an auxiliary loss against the source's top-1 class."""
    def aux(student, teacher, **kw):
        return loss(student, teacher.argmax(dim=1), **kw)
    return aux


TASK_LOSSES = Registry("task loss", entries={"ce": cross_entropy, "focal": focal, "bce": binary_cross_entropy})
# `ce` and `focal` mean what they mean in the SSKT reference: soft targets at temperature T.
AUX_LOSSES = Registry("auxiliary loss", entries={
    "kd": kd, "ce": soft_cross_entropy, "focal": soft_focal_aux,
    "hard_ce": hard_pseudo_label(cross_entropy), "hard_focal": hard_pseudo_label(focal)})


def binary_kd(student, teacher, temperature: float = 4.0, reduction: str = "mean", **_):
    """KD for multi-label tasks: per class, KL between the Bernoulli distributions sigmoid(teacher/T)
    and sigmoid(student/T), times T^2; mean over batch x classes ("mean", as BCE) or summed over
    classes and averaged over the batch ("batchmean")."""
    t = temperature
    p = torch.sigmoid(teacher.float() / t)
    per_element = (F.binary_cross_entropy_with_logits(student.float() / t, p, reduction="none")
                   - F.binary_cross_entropy_with_logits(teacher.float() / t, p, reduction="none"))
    return _reduce(per_element, reduction) * t * t
