"""Each loss against a computation written out by hand, element by element."""
import math

import pytest
import torch

from engine.losses import AUX_LOSSES, TASK_LOSSES, binary_cross_entropy, cross_entropy, focal, kd, soft_cross_entropy
from engine.methods import METHODS, build_method
from models.network import ModelOutput

STUDENT = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
TEACHER = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
LABELS = torch.tensor([1, 0])


def softmax_row(row, t=1.0):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def test_cross_entropy():
    expected = sum(-math.log(softmax_row(r)[y]) for r, y in zip(STUDENT.tolist(), LABELS.tolist())) / 2
    assert cross_entropy(STUDENT, LABELS).item() == pytest.approx(expected, rel=1e-6)


def test_focal_gamma_zero_is_ce_and_gamma_two_by_hand():
    assert focal(STUDENT, LABELS, gamma=0.0).item() == pytest.approx(cross_entropy(STUDENT, LABELS).item(), rel=1e-6)
    expected = 0.0
    for r, y in zip(STUDENT.tolist(), LABELS.tolist()):
        p = softmax_row(r)[y]
        expected += -((1 - p) ** 2) * math.log(p)
    assert focal(STUDENT, LABELS, gamma=2.0).item() == pytest.approx(expected / 2, rel=1e-6)


def test_bce():
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    expected = 0.0
    for r, t in zip(STUDENT.tolist(), targets.tolist()):
        for z, y in zip(r, t):
            p = 1 / (1 + math.exp(-z))
            expected += -(y * math.log(p) + (1 - y) * math.log(1 - p))
    assert binary_cross_entropy(STUDENT, targets).item() == pytest.approx(expected / 6, rel=1e-6)


def kl_by_hand(t=3.0):
    total = 0.0
    for s, te in zip(STUDENT.tolist(), TEACHER.tolist()):
        q, p = softmax_row(s, t), softmax_row(te, t)
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    return total


@pytest.mark.parametrize("reduction,divisor", [("batchmean", 2), ("mean", 6)])
def test_kd_scaled_by_t_squared_and_reduction(reduction, divisor):
    expected = kl_by_hand(3.0) / divisor * 9.0
    assert kd(STUDENT, TEACHER, temperature=3.0, reduction=reduction).item() == pytest.approx(expected, rel=1e-5)


def test_kd_matches_reference_kldivloss_default_reduction():
    """The reference: nn.KLDivLoss()(log_softmax(s/T), softmax(t/T)) * T * T, default reduction 'mean'."""
    t = 3.0
    reference = torch.nn.KLDivLoss()(torch.log_softmax(STUDENT / t, 1), torch.softmax(TEACHER / t, 1)) * t * t
    assert kd(STUDENT, TEACHER, temperature=t, reduction="mean").item() == pytest.approx(reference.item(), rel=1e-6)


def test_soft_cross_entropy():
    t = 2.0
    expected = 0.0
    for s, te in zip(STUDENT.tolist(), TEACHER.tolist()):
        q, p = softmax_row(s, t), softmax_row(te, t)
        expected += -sum(pi * math.log(qi) for pi, qi in zip(p, q))
    assert soft_cross_entropy(STUDENT, TEACHER, temperature=t).item() == pytest.approx(expected / 2 * 4, rel=1e-6)


def test_aux_ce_uses_source_top1():
    expected = cross_entropy(STUDENT, TEACHER.argmax(1)).item()
    assert AUX_LOSSES["ce"](STUDENT, TEACHER, temperature=3.0, reduction="mean").item() == pytest.approx(expected)


def test_sskt_method_is_task_plus_alpha_times_sum_of_aux_terms():
    method = build_method(METHODS["sskt"].Config(alpha=0.25, temperature=3.0, aux_reduction="mean"))
    aux_a, src_a = torch.randn(2, 5), torch.randn(2, 5)
    aux_b, src_b = torch.randn(2, 7), torch.randn(2, 7)
    output = ModelOutput(STUDENT, {"a": aux_a, "b": aux_b})
    loss, terms = method.loss(output, {"label": LABELS}, {"a": src_a, "b": src_b})
    expected = (cross_entropy(STUDENT, LABELS) + 0.25 * (kd(aux_a, src_a, 3.0, "mean") + kd(aux_b, src_b, 3.0, "mean")))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(terms) == {"task", "aux/a", "aux/b"}


def test_scratch_ignores_sources():
    method = build_method(METHODS["scratch"].Config())
    loss, terms = method.loss(ModelOutput(STUDENT, {}), {"label": LABELS}, {})
    assert loss.item() == pytest.approx(cross_entropy(STUDENT, LABELS).item())
    assert set(TASK_LOSSES) == {"ce", "focal", "bce"}
