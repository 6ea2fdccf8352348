"""Defences as plug-ins: the registry, each defence's hooks, and a new defence trained end to end."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor
from typer.testing import CliRunner

import pgsl
from pgsl.cli import app
from pgsl.client.party import ClientParty
from pgsl.config import Config
from pgsl.defenses import DEFENSES, Defense
from pgsl.defenses.noise import laplace_noise
from pgsl.defenses.nopeek import distance_correlation
from pgsl.server.party import ServerParty
from pgsl.split.channel import InProcessChannel
from pgsl.split.trainer import DECISION

TINY = Config().replace(model={"width": 8, "hidden": 16, "pool": 2, "dropout": 0.0},
                        recovery={"max_iter": 3, "tol": 1e-3},
                        pixel_attack={"pixels": 2, "surrogate_width": 4})
TESTS = Path(__file__).parent


@dataclass(frozen=True)
class SignParams:
    factor: float = 1.0


class SignOnly(Defense):
    """A toy defence: send only the sign of each activation, scaled."""

    Params = SignParams
    calls = 0

    def perturb(self, a: Tensor) -> Tensor:
        SignOnly.calls += 1
        return self.params.factor * (a + (a.sign() - a).detach())


def test_a_new_defence_is_one_class_and_one_registry_entry(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DEFENSES, "sign", SignOnly)
    SignOnly.calls = 0
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--preset", str(TESTS / "tiny.toml"), "--out", str(out),
                                      "--defense", "sign", "--defense-option", "factor=0.5"])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["defense"] == {"kind": "sign", "params": {"factor": 0.5}}
    accuracy = json.loads((out / "metrics.json").read_text())["test_accuracy"]
    assert set(accuracy) == {"S", DECISION} and accuracy["S"] == accuracy[DECISION]
    assert SignOnly.calls >= 256 // 32  # every training batch went through the hook
    bad = CliRunner().invoke(app, ["train", "--preset", str(TESTS / "tiny.toml"), "--out",
                                   str(tmp_path / "bad"), "--defense", "sign", "--defense-option", "f=1"])
    assert bad.exit_code == 2 and "has no option(s) ['f']; its options: factor" in bad.output


# where a registered name is also an ordinary word or the package's own name: (file, word, why)
NOT_A_PLUGIN_NAME = {
    ("attacks/unsplit.py", "noise"): "UnSplit's random-noise initialisation",
    ("experiments/predict.py", "mean"): "a film rule: the mean of a film's patch scores",
    ("runtime/run.py", "pgsl"): "the package's version in a run's environment",
    ("data/base.py", "pgsl"): "the package's cache folder",
    ("flare/job.py", "pgsl"): "the package FLARE ships to the sites, the job's and project's name",
    ("flare/logs.py", "pgsl"): "the package's logger",
    ("cli.py", "pgsl"): "the package's logger",
    ("flare/site_app.py", "pgsl"): "the package's logger",
    ("transport/tls.py", "pgsl"): "the certificates' organisation",
    ("typed.py", "none"): "the word for a missing value in messages",
}


def test_no_registered_name_is_a_literal_outside_its_module_and_the_registry() -> None:
    """Every string constant equal to a registered defence or attack name, outside docstrings,
    messages (f-strings) and keyword arguments (``reduction="none"``), may appear only in that
    plug-in's own module or its registry; the rest are words of another meaning, listed above."""
    import ast

    from pgsl.attacks import ATTACKS

    root = Path(pgsl.__file__).parent
    names = set(DEFENSES) | set(ATTACKS)
    own = {n: f"{cls.__module__.removeprefix('pgsl.').replace('.', '/')}.py"
           for registry in (DEFENSES, ATTACKS) for n, cls in registry.items()}
    hits = set()
    for path in root.rglob("*.py"):
        rel = str(path.relative_to(root))
        if rel in ("defenses/__init__.py", "attacks/__init__.py"):
            continue
        tree = ast.parse(path.read_text())
        skip = {id(x) for n in ast.walk(tree) if isinstance(n, ast.keyword) for x in ast.walk(n.value)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body and \
                    isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
                skip.add(id(node.body[0].value))
            if isinstance(node, ast.JoinedStr):
                skip.update(id(n) for n in ast.walk(node))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and node.value in names and id(node) not in skip
                    and own.get(node.value) != rel and (rel, node.value) not in NOT_A_PLUGIN_NAME):
                hits.add(f"{rel}:{node.lineno}: {node.value!r}")
    assert not hits, sorted(hits)
    assert len(names) >= 15  # every registered name was checked, the attacks' too


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_the_attackers_path_is_the_client_pipeline_with_gradients(name: str) -> None:
    params = {"noise": {"scale": 0.5}, "nopeek": {"weight": 0.5}}.get(name, {})
    cfg = TINY.replace(defense={"kind": name, "params": params})
    client = ClientParty(cfg, channels=1, num_classes=3)
    x = torch.rand(5, 1, 12, 12)
    torch.manual_seed(3)
    sent = client.query(x)
    torch.manual_seed(3)
    xr = x.clone().requires_grad_(True)
    path = client.observe(xr)
    assert torch.allclose(path, sent, atol=1e-6)
    (grad,) = torch.autograd.grad(path.square().sum(), xr)
    assert grad.abs().sum() > 0  # a white-box attacker gets a gradient through every defence


def test_nopeek_trains_on_a_last_batch_of_one() -> None:
    cfg = TINY.replace(defense={"kind": "nopeek", "params": {"weight": 1.0}})
    client, server = ClientParty(cfg, 1, 3), ServerParty(cfg, 3)
    assert client.defense.extra_loss(torch.rand(1, 1, 12, 12), torch.rand(1, 8, 12, 12)) is None
    before = [p.detach().clone() for p in client.segment.parameters()]
    client.train_step(torch.rand(1, 1, 12, 12), torch.tensor([2]), InProcessChannel(server))
    assert any(not torch.equal(p, q) for p, q in zip(before, client.segment.parameters(), strict=True))


def test_nopeek_changes_the_client_update() -> None:
    x, y = torch.rand(6, 1, 12, 12), torch.tensor([0, 1, 2, 0, 1, 2])
    updates = []
    for weight in (0.0, 5.0):
        cfg = TINY.replace(defense={"kind": "nopeek", "params": {"weight": weight}})
        torch.manual_seed(0)
        client, server = ClientParty(cfg, 1, 3), ServerParty(cfg, 3)
        client.train_step(x, y, InProcessChannel(server))
        updates.append(torch.cat([p.detach().flatten() for p in client.segment.parameters()]))
    assert not torch.allclose(updates[0], updates[1])


def test_defence_config_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="unknown defence 'dpx'; choose from pgsl, none, noise, nopeek"):
        TINY.replace(defense={"kind": "dpx"})
    with pytest.raises(ValueError, match="defence .noise.: option scale must be a number, got .big."):
        TINY.replace(defense={"kind": "noise", "params": {"scale": "big"}})
    with pytest.raises(ValueError, match="noise scale must be >= 0"):
        TINY.replace(defense={"kind": "noise", "params": {"scale": -1.0}})
    noisy = TINY.replace(defense={"kind": "noise", "params": {"scale": 2}})
    assert noisy.defense.params == {"scale": 2}
    # switching defence drops the other defence's options
    assert noisy.replace(defense={"kind": "nopeek"}).defense.params == {}


def test_each_defence_names_its_server_model_and_streams() -> None:
    for name, cls in DEFENSES.items():
        params = {"noise": {"scale": 0.5}}.get(name, {})
        server = ServerParty(TINY.replace(defense={"kind": name, "params": params}), 3)
        assert server.model.streams == cls.streams


def _dcor_brute_force(x: np.ndarray, y: np.ndarray) -> float:
    """Szekely et al. (2007), written out with loops: the reference."""
    n = len(x)

    def centred(z: np.ndarray) -> np.ndarray:
        d = np.array([[np.sqrt(((z[i] - z[j]) ** 2).sum()) for j in range(n)] for i in range(n)])
        return d - d.mean(0)[None, :] - d.mean(1)[:, None] + d.mean()

    a, b = centred(x.reshape(n, -1)), centred(y.reshape(n, -1))
    dcov = (a * b).mean()
    return float(np.sqrt(max(dcov, 0) / np.sqrt((a * a).mean() * (b * b).mean())))


def test_distance_correlation_matches_brute_force_reference() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randn(24, 5, 3, 3, generator=g, dtype=torch.float64) + 3 * x[:, :, :3, :3]
    got = float(distance_correlation(x, y))
    assert got == pytest.approx(_dcor_brute_force(x.numpy(), y.numpy()), abs=1e-5)
    assert float(distance_correlation(x, 2 * x + 1)) == pytest.approx(1.0, abs=1e-5)
    indep = float(distance_correlation(torch.randn(400, 3, generator=g), torch.randn(400, 3, generator=g)))
    assert indep < 0.2
    x.requires_grad_(True)
    distance_correlation(x, y).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="differ"):
        distance_correlation(x[:3], y[:4])


def test_laplace_noise_has_the_laplace_scale() -> None:
    a = torch.zeros(200_000)
    noisy = laplace_noise(a, 0.7, generator=torch.Generator().manual_seed(1))
    assert abs(float(noisy.mean())) < 0.01
    assert float(noisy.abs().mean()) == pytest.approx(0.7, rel=0.02)  # E|X| = b
    assert torch.equal(laplace_noise(a, 0.0), a)
    with pytest.raises(ValueError):
        laplace_noise(a, -1.0)
