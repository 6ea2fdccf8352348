"""The split protocol: what crosses the cut, which gradient comes back, bad messages refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pgsl.client.party import ClientParty
from pgsl.config import Config
from pgsl.layers import upsample
from pgsl.server.party import BadRequest, ServerParty
from pgsl.split.channel import InProcessChannel
from pgsl.split.messages import Activations

TINY = Config().replace(
    model={"width": 8, "hidden": 16, "pool": 2, "dropout": 0.0},
    recovery={"max_iter": 5, "tol": 1e-3},
    pixel_attack={"pixels": 2, "surrogate_width": 4},
)


class Recorder:
    """A server endpoint that keeps every message it receives."""

    def __init__(self, server: ServerParty) -> None:
        self.server, self.seen = server, []

    def train_step(self, message: Activations):
        self.seen.append(message)
        return self.server.train_step(message)

    def predict(self, message: Activations):
        self.seen.append(message)
        return self.server.predict(message)


def parties(device: torch.device):
    client = ClientParty(TINY, channels=1, num_classes=3, device=device)
    server = ServerParty(TINY, num_classes=3, device=device)
    return client, server


def test_client_receives_exactly_the_gradient_of_s_f(device: torch.device) -> None:
    client, server = parties(device)
    x = torch.rand(6, 1, 12, 12, device=device)
    y = torch.tensor([0, 1, 2, 0, 1, 2], device=device)
    x_check = client.defense.encode(x, y)
    a = client.segment(x_check).detach()

    # expected: d CE(S_f) / d a, computed on a copy of the server before its step
    model = server.model
    model.train()
    torch.manual_seed(5)
    a_ref = a.clone().requires_grad_(True)
    u_a, u_r = upsample(a_ref), upsample(model.recovery(a_ref))
    loss_f = F.cross_entropy(model.s_f(model.fusion(u_a, u_r)), y)
    (expected,) = torch.autograd.grad(loss_f, a_ref)

    torch.manual_seed(5)
    reply = InProcessChannel(server).train_step(Activations(1, a, y))
    assert expected.abs().max() > 1e-4  # a real gradient, so the comparison below means something
    assert torch.allclose(reply.grad, expected, atol=1e-6)


def test_s_a_and_s_r_send_nothing_back(device: torch.device) -> None:
    _, server = parties(device)
    a = torch.randn(4, 8, 6, 6, device=device, requires_grad=True)
    s_a, s_f, s_r = server.model(a)
    assert server.model.streams == ("S_a", "S_f", "S_r")
    for stream in (s_a, s_r):
        (g,) = torch.autograd.grad(stream.sum(), a, retain_graph=True, allow_unused=True)
        assert g is None or torch.count_nonzero(g) == 0
    (g_f,) = torch.autograd.grad(s_f.sum(), a)
    assert torch.count_nonzero(g_f) > 0


def test_only_activations_and_labels_cross_the_cut(device: torch.device) -> None:
    client, server = parties(device)
    recorder = Recorder(server)
    channel = InProcessChannel(recorder)  # type: ignore[arg-type]
    x = torch.rand(5, 1, 12, 12, device=device)
    y = torch.tensor([0, 1, 2, 1, 0], device=device)
    client.train_step(x, y, channel)
    client.predict(x, channel)
    train_msg, predict_msg = recorder.seen
    assert train_msg.activations.shape == (5, 8, 6, 6)  # never (5, 1, 12, 12)
    assert torch.equal(train_msg.labels, y)
    assert predict_msg.labels is None  # inference sends no labels
    assert not train_msg.activations.requires_grad  # no path into the client's graph


def test_training_step_updates_both_sides(device: torch.device) -> None:
    client, server = parties(device)
    before_c = [p.detach().clone() for p in client.segment.parameters()]
    before_s = [p.detach().clone() for p in server.model.s_r.parameters()]
    client.train_step(torch.rand(4, 1, 12, 12, device=device),
                      torch.tensor([0, 1, 2, 0], device=device), InProcessChannel(server))
    assert any(not torch.equal(p, q) for p, q in zip(before_c, client.segment.parameters(), strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(before_s, server.model.s_r.parameters(), strict=True))


@pytest.mark.parametrize(
    "activations, labels, message",
    [
        (torch.full((2, 8, 6, 6), float("nan")), torch.tensor([0, 1]), "NaN or Inf"),
        (torch.randn(2, 7, 6, 6), torch.tensor([0, 1]), "shape"),
        (torch.randn(2, 8, 6), torch.tensor([0, 1]), "shape"),
        (torch.randn(2, 8, 6, 6), torch.tensor([0, 3]), "labels must lie"),
        (torch.randn(2, 8, 6, 6), torch.tensor([0.0, 1.0]), "int64"),
        (torch.randn(2, 8, 6, 6), None, "needs labels"),
        (torch.randint(0, 3, (2, 8, 6, 6)), torch.tensor([0, 1]), "float"),
    ],
)
def test_bad_messages_are_refused_and_model_untouched(activations, labels, message) -> None:
    _, server = parties(torch.device("cpu"))
    before = {k: v.clone() for k, v in server.model.state_dict().items()}
    with pytest.raises(BadRequest, match=message):
        server.train_step(Activations(1, activations, labels))
    after = server.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("source, same", [("predicted", True), ("true", False)])
def test_label_source_decides_whether_labels_shape_the_perturbation(source: str, same: bool) -> None:
    """With the default, what crosses the cut cannot carry the label through the attack."""
    cfg = TINY.replace(pixel_attack={"label_source": source, "pixels": 4})
    sent = []
    for labels in (torch.tensor([0, 0, 0, 0]), torch.tensor([1, 2, 1, 2])):
        torch.manual_seed(0)
        client = ClientParty(cfg, channels=1, num_classes=3)
        recorder = Recorder(ServerParty(cfg, num_classes=3))
        torch.manual_seed(1)
        client.train_step(torch.rand(4, 1, 12, 12), labels, InProcessChannel(recorder))  # type: ignore[arg-type]
        sent.append(recorder.seen[0].activations)
    assert torch.equal(sent[0], sent[1]) is same


def test_activations_that_overflow_are_refused_and_roll_back_batchnorm() -> None:
    _, server = parties(torch.device("cpu"))
    before = {k: v.clone() for k, v in server.model.state_dict().items()}
    huge = torch.full((2, 8, 6, 6), 3e38)  # finite, but far out of range
    with pytest.raises(BadRequest, match="exceed"):
        server.train_step(Activations(1, huge, torch.tensor([0, 1])))
    # below the bound, but the forward pass overflows: rolled back, BatchNorm included
    import pgsl.server.party as party_module

    bound = party_module.MAX_ABS_ACTIVATION
    party_module.MAX_ABS_ACTIVATION = float("inf")
    try:
        with pytest.raises(BadRequest, match="non-finite"):
            server.train_step(Activations(1, huge, torch.tensor([0, 1])))
    finally:
        party_module.MAX_ABS_ACTIVATION = bound
    after = server.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    server.train_step(Activations(2, torch.randn(2, 8, 6, 6), torch.tensor([0, 1])))  # still fine
