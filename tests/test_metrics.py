"""The metrics beside accuracy (balanced accuracy, recall per class, macro-F1, AUC, confusion), checked
against scikit-learn, and in every run's metrics.json with the majority-class baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, recall_score, roc_auc_score
from typer.testing import CliRunner

from pgsl.cli import app
from pgsl.metrics import classification_metrics, majority_baseline
from pgsl.split.trainer import DECISION

TESTS = Path(__file__).parent
CLASSES = ("normal", "benign", "malignant", "other")


def _case(n: int, k: int, absent: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (n,), generator=g)
    if absent is not None:
        labels[labels == absent] = (absent + 1) % k
    logits = torch.randn(n, k, generator=g) + 1.5 * torch.nn.functional.one_hot(labels, k)
    return logits.softmax(1), labels


@pytest.mark.parametrize("absent", [None, 3])
def test_metrics_match_scikit_learn(absent: int | None) -> None:
    scores, labels = _case(200, 4, absent, seed=1)
    m = classification_metrics(scores, labels, CLASSES)
    y, p, s = labels.numpy(), scores.argmax(1).numpy(), scores.numpy()
    present = sorted(set(y.tolist()))
    assert m["accuracy"] == pytest.approx(float((y == p).mean()))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    recall = recall_score(y, p, labels=present, average=None)
    assert [m["recall"][CLASSES[c]] for c in present] == pytest.approx(list(recall), abs=1e-6)
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, labels=present, average="macro"), abs=1e-6)
    if absent is None:
        expected = roc_auc_score(y, s, multi_class="ovr", average="macro")
        assert m["auc_ovr"] == pytest.approx(expected, abs=1e-6)
    else:
        assert m["recall"][CLASSES[absent]] is None
        expected = np.mean([roc_auc_score(y == c, s[:, c]) for c in present])
        assert m["auc_ovr"] == pytest.approx(expected, abs=1e-6)
    assert m["confusion"] == confusion_matrix(y, p, labels=range(4)).tolist()


def test_majority_baseline_and_bad_shapes() -> None:
    train = torch.tensor([0, 0, 0, 1, 2])
    test = torch.tensor([0, 1, 1, 2])
    base = majority_baseline(train, test, CLASSES[:3])
    assert base == {"class": "normal", "accuracy": 0.25, "balanced_accuracy": pytest.approx(1 / 3)}
    with pytest.raises(ValueError, match=r"need scores \(N, 3\)"):
        classification_metrics(torch.rand(4, 2), test, CLASSES[:3])


def test_every_run_writes_the_metrics_and_the_majority_baseline(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--preset", str(TESTS / "tiny.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test_metrics"]) == {"S_a", "S_f", "S_r", DECISION}
    for key, m in metrics["test_metrics"].items():
        assert m["accuracy"] == pytest.approx(metrics["test_accuracy"][key])
        assert sum(map(sum, m["confusion"])) == metrics["n_test"] == m["n"]
        assert set(m) >= {"balanced_accuracy", "recall", "macro_f1", "auc_ovr"}
    assert set(metrics["majority_baseline"]) == {"class", "accuracy", "balanced_accuracy"}
    assert metrics["history"][-1]["test_balanced_accuracy"][DECISION] == metrics["test_metrics"][DECISION][
        "balanced_accuracy"]
    text = " ".join(result.output.split())
    assert "majority-class baseline (always" in text and "balanced acc." in text
