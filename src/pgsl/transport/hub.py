"""One :class:`~pgsl.server.party.ServerParty` shared by many sites, whatever carries their steps.

The hub is the runtime-neutral half of the computation server: the gRPC service
(:mod:`pgsl.transport.server`) and the NVIDIA FLARE server (:mod:`pgsl.flare.server`) authenticate a
site their own way and hand its encoded step here; the hub answers with the encoded reply or a
:class:`Refused` naming a status code, so both runtimes schedule, validate and refuse alike.

Scheduling: the server's modules are shared state and autograd is not safe under concurrent
backward passes, so every step (train or predict) of every site runs under one lock, in arrival
order; the runtimes' threads only overlap decoding, encoding and I/O. Sites interleave batch by
batch, like round-robin split learning with one shared server model.

Refusals: ``INVALID_ARGUMENT`` for what the site sent (a request that does not decode, or that the
party refuses with :class:`~pgsl.server.party.BadRequest`: shape, dtype, NaN/Inf, labels, a
non-finite loss or gradient, the solver failing on those activations); ``FAILED_PRECONDITION`` for
a step not after the site's last accepted one or a segment width that does not fit; ``INTERNAL``
for the server's own faults (a bug, memory running out: the full traceback goes to this module's
log, the site reads "internal error at step N; see the server log"). None of them touches the
model (the party restores its state when it fails) or records the step. A resent last step is
answered from a per-site reply cache, so a site that lost a reply can ask again. The state
(party, per-site last step and reply) is checkpointed atomically every ``checkpoint_every``
training steps and by :meth:`StepHub.save`, and reloaded on start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import torch

from pgsl.checkpoint import load_checkpoint, save_checkpoint
from pgsl.server.party import BadRequest
from pgsl.split.messages import Activations, Gradient, Scores, StreamStats
from pgsl.transport import pgsl_pb2 as pb
from pgsl.transport.codec import DecodeError, decode_request, encode_gradient, encode_scores

log = logging.getLogger(__name__)

__all__ = ["Party", "Refused", "StepHub"]


class Party(Protocol):
    """What a hub hosts: :class:`ServerParty`, or any other endpoint of the protocol (a
    malicious server in an attack experiment)."""

    device: torch.device

    @property
    def width(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    def train_step(self, msg: Activations) -> Gradient: ...

    def predict(self, msg: Activations) -> Scores: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class Refused(Exception):
    """The hub does not answer this request; ``code`` is a gRPC status name
    (``INVALID_ARGUMENT``, ``FAILED_PRECONDITION``, ``INTERNAL``), ``details`` says why."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code, self.details = code, details


@dataclass
class _Window:
    """A site's training steps since its last throughput line."""

    steps: int = 0
    samples: int = 0
    loss_sums: list[float] = field(default_factory=list)  # per stream, weighted by batch size
    start: float = field(default_factory=time.perf_counter)


def _fmt(losses: Sequence[float]) -> str:
    return "/".join(f"{x:.4f}" for x in losses)


class StepHub:
    """Answers every site's steps with one shared ``party`` (see the module docstring).

    Args:
        checkpoint: file of the hub's state; loaded when it exists, written every
            ``checkpoint_every`` training steps and by :meth:`save`. None keeps nothing.
        log_every: training steps of a site between its throughput lines in the log.
    """

    def __init__(self, party: Party, *, checkpoint: Path | None = None, checkpoint_every: int = 200,
                 log_every: int = 100) -> None:
        self.party = party
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.lock = threading.RLock()  # save() takes it too, also from inside a step
        self.last_step: dict[str, int] = {}
        self.last_reply: dict[str, bytes] = {}  # makes a resent last step idempotent
        self.train_steps = 0
        self._window: dict[str, _Window] = defaultdict(_Window)
        if checkpoint is not None and checkpoint.is_file():
            state = load_checkpoint(checkpoint, party.device)
            party.load_state_dict(state["server"])
            self.last_step = {str(k): int(v) for k, v in state["last_step"].items()}
            self.last_reply = {str(k): v.numpy().tobytes() for k, v in state["last_reply"].items()}
            self.train_steps = int(state["train_steps"])
            log.info("restored server state from %s (%d training steps)", checkpoint,
                     self.train_steps)

    def join(self, site: str, width: int) -> pb.Welcome:
        """A site announces its segment width; -> where it stopped (``FAILED_PRECONDITION`` when
        its width does not fit the server's)."""
        if width != self.party.width:
            raise Refused("FAILED_PRECONDITION", f"client segment width {width} does not match the "
                                                 f"server's {self.party.width}")
        with self.lock:
            last = self.last_step.get(site, 0)
        log.info("site %s joined (last step %d)", site, last)
        return pb.Welcome(site=site, last_step=last, width=self.party.width,
                          num_classes=self.party.num_classes)

    def answer(self, site: str, request: pb.StepRequest) -> pb.StepReply:
        """One step of ``site``: the reply, or :class:`Refused`; in arrival order across sites."""
        try:
            message, train, reply_dtype = decode_request(request)
        except DecodeError as e:
            raise Refused("INVALID_ARGUMENT", str(e)) from None
        except Exception:
            self._internal(site, request.step)
        with self.lock:
            last = self.last_step.get(site, 0)
            if message.step == last and site in self.last_reply:
                # the site lost our reply (connection or server restart) and asks again
                log.info("site %s resent step %d: answering from the reply cache", site, last)
                return pb.StepReply.FromString(self.last_reply[site])
            if message.step <= last:
                raise Refused("FAILED_PRECONDITION",
                              f"out-of-order step {message.step}: site {site} is at step {last}")
            reply, stats = self._run(site, message, train, reply_dtype)
            self.last_step[site] = message.step
            self.last_reply[site] = reply.SerializeToString()
            if stats is not None:
                self.train_steps += 1
                self._account(site, stats)
                if self.checkpoint and self.train_steps % self.checkpoint_every == 0:
                    self.save()
        return reply

    def _run(self, site: str, message: Activations, train: bool,
             reply_dtype: torch.dtype | None) -> tuple[pb.StepReply, StreamStats | None]:
        """One step of the party, encoded; -> (reply, the training statistics or None)."""
        try:
            if train:
                gradient = self.party.train_step(message)
                return encode_gradient(gradient, reply_dtype), gradient.stats
            return encode_scores(self.party.predict(message)), None
        except BadRequest as e:
            raise Refused("INVALID_ARGUMENT", str(e)) from None
        except Exception:
            self._internal(site, message.step)

    @staticmethod
    def _internal(site: str, step: int) -> NoReturn:
        """Log the exception being handled with its traceback; refuse with ``INTERNAL``."""
        log.exception("internal error at step %d of site %s", step, site)
        raise Refused("INTERNAL", f"internal error at step {step}; see the server log") from None

    def _account(self, site: str, stats: StreamStats) -> None:
        """Per site: log every step's stream losses (debug) and, every ``log_every`` training steps,
        the throughput and the window's mean loss per stream (info)."""
        w = self._window[site]
        w.steps += 1
        w.samples += stats.count
        w.loss_sums = [s + loss * stats.count for s, loss in
                       zip(w.loss_sums or [0.0] * len(stats.losses), stats.losses, strict=True)]
        log.debug("site %s step %d stream losses %s", site, self.last_step[site], _fmt(stats.losses))
        if w.steps >= self.log_every:
            elapsed = time.perf_counter() - w.start
            log.info("site %s: %d steps, %.0f samples/s, mean stream losses %s", site, w.steps,
                     w.samples / elapsed, _fmt([x / max(w.samples, 1) for x in w.loss_sums]))
            self._window[site] = _Window()

    def save(self) -> None:
        """Atomic checkpoint of the shared server state, replies included."""
        if self.checkpoint is None:
            return
        with self.lock:
            replies = {k: torch.frombuffer(bytearray(v), dtype=torch.uint8)
                       for k, v in self.last_reply.items()}
            save_checkpoint(self.checkpoint, {"server": self.party.state_dict(),
                                              "last_step": dict(self.last_step),
                                              "last_reply": replies,
                                              "train_steps": self.train_steps})
