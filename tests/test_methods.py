"""KD, DML and MAXL: losses against hand computations, gradient routing, the MAXL look-ahead
against finite differences, and the hierarchy mask."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

from engine.config import load_config
from engine.losses import binary_kd, cross_entropy, kd
from engine.methods import METHODS, Context, build_method
from engine.methods.dml import mutual_losses
from engine.methods.maxl import AUX_HEAD, hierarchy_mask, masked_labels
from models.network import ModelOutput
from tests.test_losses import LABELS, STUDENT, TEACHER, softmax_row


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def kl_rows(p_logits, q_logits, t):
    """sum over rows of KL(softmax(p/t) || softmax(q/t)), written out."""
    total = 0.0
    for a, b in zip(p_logits, q_logits):
        p, q = softmax_row(a, t), softmax_row(b, t)
        total += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    return total


def test_kd_loss_by_hand():
    method = build_method(METHODS["kd"].Config())  # defaults: alpha 0.9, T 4
    loss, terms = method.loss(ModelOutput(STUDENT, {}), {"label": LABELS}, {"teacher": TEACHER})
    ce = sum(-math.log(softmax_row(r)[y]) for r, y in zip(STUDENT.tolist(), LABELS.tolist())) / 2
    kl = kl_rows(TEACHER.tolist(), STUDENT.tolist(), 4.0) / 2 * 16.0
    assert loss.item() == pytest.approx(0.1 * ce + 0.9 * kl, rel=1e-5)
    assert terms["task"].item() == pytest.approx(ce, rel=1e-5) and terms["kd"].item() == pytest.approx(kl, rel=1e-5)


def test_binary_kd_by_hand():
    total = 0.0
    for s_row, t_row in zip(STUDENT.tolist(), TEACHER.tolist()):
        for s, t in zip(s_row, t_row):
            p, q = 1 / (1 + math.exp(-t / 2)), 1 / (1 + math.exp(-s / 2))
            total += p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    assert binary_kd(STUDENT, TEACHER, temperature=2.0).item() == pytest.approx(total / 6 * 4, rel=1e-5)


def test_dml_losses_by_hand():
    third = torch.tensor([[0.5, 0.5, -1.0], [2.0, 0.0, 0.0]])
    logits = [STUDENT, TEACHER, third]
    parts = mutual_losses(logits, LABELS, "ce", temperature=1.0)
    rows = [x.tolist() for x in logits]
    for k, (task, mimic) in enumerate(parts):
        assert task.item() == pytest.approx(cross_entropy(logits[k], LABELS).item(), rel=1e-6)
        others = [kl_rows(rows[j], rows[k], 1.0) / 2 for j in range(3) if j != k]
        assert mimic.item() == pytest.approx(sum(others) / 2, rel=1e-5)


def test_dml_peer_gradient_comes_only_from_its_own_loss():
    torch.manual_seed(0)
    peers = [torch.nn.Linear(4, 3) for _ in range(2)]
    x = torch.randn(5, 4)
    y = torch.randint(0, 3, (5,))
    parts = mutual_losses([p(x) for p in peers], y, "ce", temperature=2.0)
    sum(t + m for t, m in parts).backward()
    together = [p.weight.grad.clone() for p in peers]
    for k, peer in enumerate(peers):
        for p in peers:
            p.zero_grad()
        own = mutual_losses([p(x) for p in peers], y, "ce", temperature=2.0)[k]
        (own[0] + own[1]).backward()
        assert torch.allclose(peer.weight.grad, together[k], atol=1e-7)
        other = peers[1 - k]
        assert other.weight.grad is None or not other.weight.grad.abs().any()


METHOD_CONFIG = """
seed: 0
data:
  dataset: procedural
  root: {data}
  procedural: {{label: shape, train_size: 16, test_size: 8}}
  loader: resident
  batch_size: 8
model: {{target: resnet8}}
optim: {{lr: 0.1, momentum: 0.9, weight_decay: 5.0e-4}}
method: {method}
train: {{precision: "no", progress: false}}
run: {{root: {runs}}}
"""


def built(tmp_path, method: str, num_classes: int = 6):
    cfg = load_config(_write(tmp_path, method))
    m = build_method(cfg.method)
    torch.manual_seed(0)
    m.build(Context(cfg, num_classes, False, []))
    return m


def _write(tmp_path, method):
    path = tmp_path / "m.yaml"
    path.write_text(METHOD_CONFIG.format(data=tmp_path / "data", runs=tmp_path / "runs", method=method))
    return path


def batch(n=8, classes=6, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(n, 3, size, size, generator=g), "label": torch.randint(0, classes, (n,), generator=g)}


def test_dml_peers_have_their_own_optimizers_and_state(tmp_path):
    method = built(tmp_path, "{name: dml, peers: [resnet8, resnet8]}")
    method.setup(Accelerator(cpu=True), epochs=2)
    assert list(method.nets) == ["peer0", "peer1", "peer2"] and len(method.optimizers) == 3
    before = {k: [p.detach().clone() for p in n.parameters()] for k, n in method.nets.items()}
    method.training_step(batch(), {})
    for name, net in method.nets.items():
        params = list(net.parameters())
        opt = method.optimizers[name]
        assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in params}
        assert all("momentum_buffer" in opt.state[p] for p in params)  # each peer's own state
        assert any(not torch.equal(a, b) for a, b in zip(before[name], params))  # every peer stepped
    assert len({id(o.optimizer) for o in method.optimizers.values()}) == 3


def test_generated_labels_respect_the_psi_mask():
    psi = [2, 3, 1]
    mask = hierarchy_mask(psi)
    assert mask.tolist() == [[True, True, False, False, False, False],
                             [False, False, True, True, True, False],
                             [False, False, False, False, False, True]]
    labels = torch.tensor([0, 1, 2, 1])
    generated = masked_labels(torch.randn(4, 6) * 5, mask[labels])
    assert torch.equal(generated[~mask[labels]], torch.zeros(int((~mask[labels]).sum())))
    assert torch.allclose(generated.sum(1), torch.ones(4))
    assert (generated[mask[labels]] > 0).all()


def lookahead_objective(method, gen_params: dict, images, labels, entropy_weight):
    """MAXL's generator objective, computed independently of engine.methods.maxl: the primary
    loss of a copy of the multi-task net after one virtual SGD step (with weight decay), plus
    the entropy regulariser; as a function of the generator's parameters."""
    net = copy.deepcopy(method.accelerator.unwrap_model(method.nets["multitask"]))
    generator = method.accelerator.unwrap_model(method.nets["generator"])
    gen_logits = torch.func.functional_call(generator, gen_params, (images,)).logits
    mask = method.mask[labels]
    generated = torch.softmax(gen_logits.masked_fill(~mask, float("-inf")), 1)
    out = net(images)
    focal = lambda logits, target: (-(target * (1 - logits.softmax(1)) ** 2 * logits.log_softmax(1)).sum(1)).mean()
    onehot = torch.nn.functional.one_hot(labels, out.logits.shape[1]).to(images.dtype)
    train = focal(out.logits, onehot) + focal(out.aux[AUX_HEAD], generated)
    grads = torch.autograd.grad(train, list(net.parameters()), create_graph=True)
    lr, decay = 0.1, 5e-4
    ahead = {n: p - lr * (g + decay * p) for (n, p), g in zip(net.named_parameters(), grads)}
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    primary = torch.func.functional_call(net, (ahead, buffers), (images,)).logits
    mean = generated.mean(0)
    return focal(primary, onehot) + entropy_weight * (mean * torch.log(mean + 1e-20)).sum()


@pytest.mark.parametrize("lookahead", ["second_order", "finite_difference"])
def test_maxl_generator_step_follows_the_lookahead_gradient(tmp_path, lookahead):
    method = built(tmp_path, f"{{name: maxl, psi: 2, lookahead: {lookahead}, "
                             "generator_optim: {lr: 0.01, momentum: 0.0, weight_decay: 0.0}}")
    for net in method.nets.values():
        net.double()
    method.setup(Accelerator(cpu=True), epochs=2)
    b = batch()
    images, labels = b["image"].double(), b["label"]
    generator = method.accelerator.unwrap_model(method.nets["generator"])
    before = {n: p.detach().clone() for n, p in generator.named_parameters()}
    method.generator_step(images, labels)
    moved = {n: p.detach() - before[n] for n, p in generator.named_parameters()}  # = -lr * gradient

    # A central finite difference of the independent objective along random directions.
    torch.manual_seed(5)
    for _ in range(2):
        direction = {n: torch.randn(p.shape, dtype=p.dtype) for n, p in before.items()}  # whatever p's memory layout
        h = 1e-7  # double precision; small enough that few ReLUs change side
        plus = lookahead_objective(method, {n: p + h * direction[n] for n, p in before.items()}, images, labels, 0.2)
        minus = lookahead_objective(method, {n: p - h * direction[n] for n, p in before.items()}, images, labels, 0.2)
        estimate = float(plus - minus) / (2 * h)
        predicted = -sum(float((moved[n] * direction[n]).sum()) for n in before) / 0.01
        tolerance = 1e-3 if lookahead == "second_order" else 2e-2
        assert predicted == pytest.approx(estimate, rel=tolerance, abs=1e-9)
