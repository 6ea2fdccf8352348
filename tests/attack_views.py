"""The attacker's views of a trained run for the attack tests: the victims, their labels and
views, and victims poisoned with NaN once the views are built (an attack that read them would
fail)."""

from __future__ import annotations

from pathlib import Path

import torch

from pgsl.attacks import AttackerView
from pgsl.attacks.view import reconstruction_scores
from pgsl.experiments.privacy import attacker_views


def views_of(run_dir: Path, n_victims: int = 64, n_aux: int = 1000, leak_victims: int = 0):
    """The evaluator's side: the run as `pgsl privacy` loads it, its first training images as
    victims, the first test images as the attacker's, and the views built from them by name."""
    from pgsl.data import to_float
    from pgsl.runtime import load_run

    run = load_run(run_dir, torch.device("cpu"), full_test=True)
    victims = to_float(run.dataset.train.images[:n_victims])
    labels = run.dataset.train.labels[:n_victims]
    aux = to_float(run.dataset.test.images[:n_aux])
    views = attacker_views(run, victims, labels, aux, leak_victims)
    return run, victims, labels, {v.target: v for v in views}


def poison(victims: torch.Tensor, view: AttackerView) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Overwrite the victims' images with NaN in place (an attack that read them would return
    NaN) and check the view is untouched: it holds no alias of them. Returns the clean images and
    the mean auxiliary image's scores, the baseline every attack must beat."""
    clean = victims.clone()
    victims.fill_(float("nan"))
    held = [view.observed, view.aux_images, view.aux_observed]
    if view.leak is not None:
        held += [g for grads in view.leak.gradients for g in grads]
    assert all(torch.isfinite(t).all() for t in held)
    baseline = reconstruction_scores(view.aux_images.mean(0, keepdim=True).expand_as(clean), clean)
    return clean, baseline
