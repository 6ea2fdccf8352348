"""What a defence is: the client-side changes it makes and the server model it trains.

A defence is one class (one file) and one line in :data:`pgsl.defenses.DEFENSES`. The client
pipeline is fixed and the defence fills in its hooks (paper Fig. 2, left of the cut)::

    x --encode--> x_check --client segment (conv1, conv2)--> a --perturb--> sent across the cut
                                                     client loss += extra_loss(x, sent)

and names the server model (:data:`pgsl.server.model.SERVER_MODELS`) that learns from what it sends.
Nothing outside a defence's own module and the registry names it (a test scans every registered
name); experiments read a defence's strengths from :attr:`Defense.settings`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from pgsl.typed import build

if TYPE_CHECKING:
    from pgsl.config import Config
    from pgsl.data.base import ImageSet

__all__ = ["DEFAULT", "Defense", "NoParams", "Setting", "parse_params"]


@dataclass(frozen=True)
class NoParams:
    """A defence without options."""


@dataclass(frozen=True)
class Setting:
    """One strength of a defence for ``pgsl benchmark``: the knob, its value, and the config
    sections to change (``{"defense": {"params": {...}}}``, or PGSL's ``{"recovery": {"mu": ...}}``)."""

    knob: str
    value: float
    changes: Mapping[str, Mapping[str, Any]]

    @property
    def label(self) -> str:
        return f"{self.knob}={self.value:g}" if self.knob else "default"

    @classmethod
    def option(cls, knob: str, value: float, **fixed: Any) -> Setting:
        """A setting of one of the defence's own options (``[defense.params]``), with ``fixed``
        options beside it."""
        return cls(knob, value, {"defense": {"params": {knob: value, **fixed}}})


DEFAULT = Setting("", math.nan, {})  # a defence at its configured options


def parse_params(cls: type[Any], values: Mapping[str, Any], defense: str) -> Any:
    """``values`` (from ``[defense.params]`` or ``--defense-option``) as the defence's params
    dataclass; unknown keys and wrong types are refused with a message naming the defence."""
    return build(cls, values, field=f"defence {defense!r}: option ",
                 unknown=f"defence {defense!r} has no option(s) {{names}}; its options: {{known}}")


class Defense(nn.Module):
    """Base class: the vanilla split (no change anywhere). Subclasses override the hooks they need.

    Hooks, all on the client unless said otherwise:
        encode(x, y): ``(B, C, H, W)`` in [0, 1] -> the client segment's input, without gradient.
            ``y`` is the true label in training and None at inference.
        encode_differentiable(x): the same map as a differentiable function of ``x`` for a
            white-box attacker; parts that have no useful gradient pass it straight through
            (BPDA, Athalye, Carlini & Wagner 2018), so the value is exactly :meth:`encode`'s.
        perturb(a): the segment's output -> what is sent; applied in training, at inference and
            on the attacker's path alike (noise draws fresh samples each call).
        extra_loss(x, sent): a client-side loss added to the server's gradient (or None). Called
            once per training step, after the server's reply (a defence may update its own
            simulated attacker here).
        trainable_parameters(): the defence's parameters trained with the client segment, by the
            client's optimiser (a bottleneck layer); none by default.
        prepare(...): client-side work before split training, given the client's current map
            from images to what is sent (PGSL: train its surrogate; ResSFL: pre-train its
            simulated attacker).
        guarantee(...): a formal guarantee of the training run (DP's epsilon), or None.

    Class attributes:
        server_model: the key of the server model it trains (``"one-stream"``, ``"three-streams"``).
        streams: that model's stream names, in its order (metrics are keyed by them).
        Params: a frozen dataclass of the defence's options (``[defense.params]`` in a config).
        settings: its strengths for the frontier and the benchmark, weakest first (empty: its
            defaults only); :meth:`setting` makes one of any value.
        title: its name in tables and figures (empty: the name it is registered under).
    """

    server_model: ClassVar[str] = "one-stream"
    streams: ClassVar[tuple[str, ...]] = ("S",)
    Params: ClassVar[type[Any]] = NoParams
    settings: ClassVar[tuple[Setting, ...]] = ()
    summary: ClassVar[str] = "vanilla split learning: conv1-2 on the raw image, no defence"
    title: ClassVar[str] = ""  # empty: tables use the registered name

    @classmethod
    def setting(cls, knob: str, value: float, **fixed: Any) -> Setting:
        """The setting ``knob = value`` (with ``fixed`` options beside it): by default one of the
        defence's own options (``[defense.params]``); a defence whose strength lives elsewhere in
        the configuration overrides this. An unknown knob or option is refused."""
        known = {f.name for f in dataclasses.fields(cls.Params)}
        unknown = sorted({knob, *fixed} - known)
        if unknown:
            raise ValueError(f"{cls.title or cls.__name__} has no option(s) {unknown}; its options: "
                             f"{', '.join(sorted(known)) or 'none'}")
        return Setting.option(knob, value, **fixed)

    def __init__(self, cfg: Config, channels: int, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.channels = channels
        self.num_classes = num_classes
        self.params = parse_params(self.Params, cfg.defense.params, cfg.defense.kind)

    @property
    def segment_channels(self) -> int:
        """Input channels of the client segment."""
        return self.channels

    def preparation(self, n_train: int) -> int:
        """How many samples :meth:`prepare` processes (0: nothing to prepare)."""
        return 0

    def prepare(self, data: ImageSet, *, send: Callable[[Tensor], Tensor], batch_size: int,
                seed: int, device: torch.device,
                progress: Callable[[int], None] | None = None) -> None:
        """Client-side work before split training; nothing by default. ``send``: images
        ``(B, C, H, W)`` in [0, 1] on ``device`` -> what the untrained client would send for them
        in a training step, without gradient."""

    def encode(self, x: Tensor, y: Tensor | None) -> Tensor:
        return x

    def encode_differentiable(self, x: Tensor) -> Tensor:
        return x

    def perturb(self, a: Tensor) -> Tensor:
        return a

    def extra_loss(self, x: Tensor, sent: Tensor) -> Tensor | None:
        return None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return []

    def guarantee(self, *, releases: int, n_train: int, batch_size: int) -> dict[str, float] | None:
        """The run's formal guarantee after each training sample was sent ``releases`` times
        (once per epoch), with ``n_train`` samples in batches of ``batch_size``; None: none."""
        return None

    @classmethod
    def describe_guarantee(cls, g: Mapping[str, float]) -> str:
        """One sentence for :meth:`guarantee`'s result (``metrics.json``'s ``privacy``)."""
        return "guarantee: " + ", ".join(f"{k} {v:.4g}" for k, v in g.items())

    def describe(self) -> str:
        """One line for tables: the defence and its options."""
        options = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in dataclasses.asdict(self.params).items())
        return f"{self.cfg.defense.kind}" + (f" ({options})" if options else "")
