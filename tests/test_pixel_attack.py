"""The client's intentional JSMA pixel attack (paper §IV-A)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pgsl.client.pixel_attack import intentional_jsma, pixel_budget
from pgsl.client.surrogate import Surrogate


@pytest.fixture(scope="module")
def trained() -> tuple[Surrogate, torch.Tensor, torch.Tensor]:
    """A surrogate that separates two synthetic classes (a bar left vs right)."""
    torch.manual_seed(0)
    x = torch.rand(256, 1, 12, 12) * 0.2
    y = torch.randint(0, 2, (256,))
    for i in range(256):
        col = 2 if y[i] == 0 else 9
        x[i, 0, 2:10, col] = 0.9
    model = Surrogate(1, 2, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() > 0.95
    return model, x[:64], y[:64]


@pytest.mark.parametrize("budget, per_step", [(1, 1), (4, 1), (6, 4), (0.05, 2)])
def test_changes_at_most_the_budget(trained, budget: float, per_step: int) -> None:
    model, x, y = trained
    result = intentional_jsma(model, x, y, pixels=budget, pixels_per_step=per_step)
    n = pixel_budget(budget, x[0].numel())
    changed = (result.attacked != x).flatten(1).sum(1)
    assert (changed <= n).all()
    assert (changed == result.changed.flatten(1).sum(1)).all()
    assert changed.float().mean() > 0  # it does attack
    assert result.attacked.min() >= 0 and result.attacked.max() <= 1


def test_lowers_true_class_probability(trained) -> None:
    model, x, y = trained
    result = intentional_jsma(model, x, y, pixels=6)
    with torch.no_grad():
        before = model(x).softmax(1).gather(1, y[:, None])
        after = model(result.attacked).softmax(1).gather(1, y[:, None])
    assert after.mean() < before.mean() - 0.05
    assert (after <= before + 1e-6).float().mean() > 0.9


def test_saliency_map_normalised_and_follows_eq_1_conditions(trained) -> None:
    model, x, y = trained
    result = intentional_jsma(model, x, y, pixels=2)
    assert result.saliency.shape == (64, 1, 12, 12)
    assert result.saliency.min() >= 0 and result.saliency.max() <= 1
    assert torch.allclose(result.saliency.flatten(1).amax(1)[result.saliency.flatten(1).amax(1) > 0],
                          torch.tensor(1.0))
    # non-zero saliency only where dZ_y/dx < 0 and sum_{y' != y} dZ_y'/dx > 0
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    (g_true,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), xg)
    other = 1 - y  # two classes: the other class is the sum
    xg2 = x.clone().requires_grad_(True)
    (g_other,) = torch.autograd.grad(model(xg2).gather(1, other[:, None]).sum(), xg2)
    allowed = (g_true < 0) & (g_other > 0)
    assert not (result.saliency > 0)[~allowed].any()


def test_lowering_mode_only_lowers(trained) -> None:
    model, x, y = trained
    result = intentional_jsma(model, x, y, pixels=3, theta=-1.0)
    assert (result.attacked <= x).all() and (result.attacked < x).any()


def test_without_labels_uses_prediction(trained) -> None:
    model, x, y = trained
    a = intentional_jsma(model, x, None, pixels=3).attacked
    b = intentional_jsma(model, x, model(x).argmax(1), pixels=3).attacked
    assert torch.equal(a, b)


def test_budget_rules_and_errors() -> None:
    assert pixel_budget(4, 784) == 4
    assert pixel_budget(0.01, 784) == 8
    assert pixel_budget(1e-6, 784) == 1
    with pytest.raises(ValueError, match="positive"):
        pixel_budget(0, 784)
    model = Surrogate(1, 2, width=4)
    with pytest.raises(ValueError, match="labels"):
        intentional_jsma(model, torch.rand(3, 1, 8, 8), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="theta"):
        intentional_jsma(model, torch.rand(3, 1, 8, 8), theta=0.0)
