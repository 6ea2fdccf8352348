"""The metrics a medical reader needs beside accuracy, per stream and for the decision.

From one evaluation's softmax scores ``(N, K)`` and labels ``(N,)``, with torchmetrics: accuracy,
balanced accuracy (the mean of the per-class recalls), per-class recall (sensitivity), macro-F1,
one-vs-rest AUC and macro-F1 (over the classes present in the labels) and the confusion matrix
(rows: the true class, columns: the predicted one). Beside them, :func:`majority_baseline`: what always
answering the training set's most frequent class scores on the same labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
)

__all__ = ["classification_metrics", "majority_baseline", "majority_metrics"]


def classification_metrics(scores: Tensor, labels: Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, recall per class, macro-F1, one-vs-rest AUC and the confusion
    matrix of ``scores`` ``(N, K)`` against ``labels`` ``(N,)``. Classes absent from ``labels``
    have no recall (None) and are left out of the balanced accuracy and the AUC; the AUC is None
    when fewer than two classes are present."""
    k = len(classes)
    if scores.ndim != 2 or scores.shape[1] != k or labels.shape != scores.shape[:1] or len(labels) == 0:
        raise ValueError(f"need scores (N, {k}) and labels (N,), got {tuple(scores.shape)} and "
                         f"{tuple(labels.shape)}")
    scores, labels = scores.float().cpu(), labels.long().cpu()
    confusion = multiclass_confusion_matrix(scores.argmax(1), labels, num_classes=k)
    support = confusion.sum(1)
    present = support > 0
    recall = torch.where(present, confusion.diagonal() / support.clamp(min=1), torch.nan)
    auc: float | None = None
    if int(present.sum()) >= 2:
        with warnings.catch_warnings():  # an absent class's AUC: left out just below
            warnings.filterwarnings("ignore", message="No positive samples in targets")
            per_class = multiclass_auroc(scores, labels, num_classes=k, average=None)
        auc = float(per_class[present].mean())
    return {
        "accuracy": float(confusion.diagonal().sum() / len(labels)),
        "balanced_accuracy": float(recall[present].mean()),
        "recall": {c: round(float(recall[i]), 6) if present[i] else None for i, c in enumerate(classes)},
        "macro_f1": float(multiclass_f1_score(scores, labels, num_classes=k, average=None)[present].mean()),
        "auc_ovr": auc,
        "confusion": confusion.tolist(),
        "n": len(labels),
    }


def majority_metrics(train_labels: Tensor, test_labels: Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Always answering the most frequent training class: :func:`classification_metrics` of that
    constant answer on ``test_labels`` (AUC 0.5), with the class under ``"class"``."""
    k = len(classes)
    majority = int(torch.bincount(train_labels.long().cpu(), minlength=k).argmax())
    scores = torch.nn.functional.one_hot(torch.full_like(test_labels.long().cpu(), majority), k).float()
    return {**classification_metrics(scores, test_labels, classes), "class": classes[majority]}


def majority_baseline(train_labels: Tensor, test_labels: Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Always answering the most frequent training class: its accuracy and balanced accuracy on
    ``test_labels`` (the balanced accuracy is 1 / the number of classes present there)."""
    m = majority_metrics(train_labels, test_labels, classes)
    return {"class": m["class"], "accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"]}
