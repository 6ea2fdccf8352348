"""The trivial baseline every inversion must beat: the mean of the attacker's auxiliary images."""

from __future__ import annotations

from pgsl.attacks.base import Attack, Budget, Reconstruction
from pgsl.attacks.view import AttackerView, Need

__all__ = ["MeanImage"]


class MeanImage(Attack[Budget]):
    """Answers the mean auxiliary image for every victim, whatever was observed."""

    name = "mean"
    title = "mean auxiliary image (trivial baseline)"
    needs = frozenset({Need.AUX})

    def reconstruct(self, view: AttackerView) -> Reconstruction:
        mean = view.aux_images.mean(0, keepdim=True)
        return Reconstruction(mean.expand(len(view.observed), -1, -1, -1).clone())
