"""The vanilla split (paper §V-C's undefended baseline): conv1-2 on the raw image, one stream."""

from __future__ import annotations

from pgsl.defenses.base import Defense

__all__ = ["VanillaSplit"]


class VanillaSplit(Defense):
    """No defence: the client sends ``conv2(conv1(x))`` as it is."""

    title = "vanilla split"
