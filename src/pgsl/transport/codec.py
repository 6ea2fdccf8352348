"""Tensors and cut messages <-> protobuf, with strict validation of everything that arrives.

A tensor is raw little-endian bytes + dtype + shape (never pickle). Decoding refuses unknown
dtypes, negative or oversized shapes and byte counts that do not match the shape, and replies
whose per-stream fields do not fit together (a model has one or more streams, then a decision),
with a :class:`DecodeError` whose message says what is wrong.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from pgsl.split.messages import Activations, Gradient, Scores, StreamStats
from pgsl.transport import pgsl_pb2 as pb

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
}
_NAMES = {v: k for k, v in DTYPES.items()}
MAX_ELEMENTS = 1 << 28  # 256 Mi elements: far above any batch, far below a memory bomb
MAX_DIMS = 8


class DecodeError(ValueError):
    """A protobuf message that does not describe a valid tensor or cut message."""


def encode_tensor(t: Tensor, dtype: torch.dtype | None = None) -> pb.Tensor:
    """Tensor -> protobuf; ``dtype`` casts first (e.g. float16 to halve the traffic)."""
    t = t.detach()
    if dtype is not None:
        t = t.to(dtype)
    if t.dtype not in _NAMES:
        raise TypeError(f"cannot send a {t.dtype} tensor; supported: {sorted(DTYPES)}")
    t = t.contiguous().cpu()
    raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t  # NumPy has no bfloat16
    data = raw.numpy().astype(raw.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
    return pb.Tensor(dtype=_NAMES[t.dtype], shape=list(t.shape), data=data)


def decode_tensor(msg: pb.Tensor, what: str) -> Tensor:
    """Protobuf -> tensor (a fresh, writable copy); :class:`DecodeError` if anything is off."""
    if msg.dtype not in DTYPES:
        raise DecodeError(f"{what}: unsupported dtype {msg.dtype!r}; expected one of {sorted(DTYPES)}")
    shape = tuple(int(d) for d in msg.shape)
    if not shape or len(shape) > MAX_DIMS or any(d < 0 or d > MAX_ELEMENTS for d in shape):
        raise DecodeError(f"{what}: invalid shape {shape}")
    n = math.prod(shape)
    if n > MAX_ELEMENTS:
        raise DecodeError(f"{what}: {n} elements exceed the limit of {MAX_ELEMENTS}")
    dtype = DTYPES[msg.dtype]
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(msg.data) != n * itemsize:
        raise DecodeError(
            f"{what}: shape {shape} of {msg.dtype} needs {n * itemsize} bytes, got {len(msg.data)}"
        )
    np_dtype = {torch.bfloat16: "<i2", torch.float16: "<f2", torch.float32: "<f4",
                torch.int64: "<i8"}[dtype]
    arr = np.frombuffer(msg.data, dtype=np_dtype).reshape(shape).copy()
    t = torch.from_numpy(arr)
    return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t


def encode_request(message: Activations, *, train: bool, wire_dtype: torch.dtype | None = None,
                   reply_dtype: torch.dtype | None = None) -> pb.StepRequest:
    """A step request; ``wire_dtype`` casts the activations, ``reply_dtype`` asks for the gradient
    in that dtype (None: the activations' dtype on the wire)."""
    req = pb.StepRequest(step=message.step, train=train,
                         activations=encode_tensor(message.activations, wire_dtype),
                         reply_dtype=_NAMES.get(reply_dtype, "") if reply_dtype else "")
    if message.labels is not None:
        req.labels.CopyFrom(encode_tensor(message.labels))
    return req


def decode_request(req: pb.StepRequest) -> tuple[Activations, bool, torch.dtype | None]:
    """-> (message with float32 activations, is training, dtype wanted for the reply)."""
    if not req.HasField("activations"):
        raise DecodeError(f"step {req.step}: no activations")
    a = decode_tensor(req.activations, f"step {req.step} activations")
    if not a.is_floating_point():
        raise DecodeError(f"step {req.step}: activations must be floating point, got {req.activations.dtype}")
    labels = decode_tensor(req.labels, f"step {req.step} labels") if req.HasField("labels") else None
    if req.reply_dtype and (req.reply_dtype not in DTYPES or DTYPES[req.reply_dtype] == torch.int64):
        raise DecodeError(f"step {req.step}: unsupported reply dtype {req.reply_dtype!r}")
    reply_dtype = DTYPES[req.reply_dtype] if req.reply_dtype else a.dtype
    return Activations(int(req.step), a.float(), labels), bool(req.train), reply_dtype


def encode_gradient(g: Gradient, dtype: torch.dtype | None) -> pb.StepReply:
    """A training reply; ``dtype`` casts the gradient (None keeps its dtype)."""
    stats = pb.StreamStats(losses=g.stats.losses, correct=g.stats.correct, count=g.stats.count)
    return pb.StepReply(step=g.step, grad=encode_tensor(g.grad, dtype), stats=stats)


def decode_gradient(reply: pb.StepReply, shape: tuple[int, ...] | None = None) -> Gradient:
    """-> the gradient (float32) and the batch's statistics; :class:`DecodeError` if the reply has
    no floating-point gradient (of ``shape``, the activations', when given), no stream losses, not
    one ``correct`` count per stream plus the decision's, or a count above the batch size."""
    what = f"step {reply.step} reply"
    if not reply.HasField("grad"):
        raise DecodeError(f"{what}: no gradient")
    grad = decode_tensor(reply.grad, f"{what} gradient")
    if not grad.is_floating_point():
        raise DecodeError(f"{what}: the gradient must be floating point, got {reply.grad.dtype}")
    if shape is not None and tuple(grad.shape) != tuple(shape):
        raise DecodeError(f"{what}: gradient of shape {tuple(grad.shape)} for activations of {tuple(shape)}")
    return Gradient(int(reply.step), grad.float(), _decode_stats(reply.stats, what))


def _decode_stats(msg: pb.StreamStats, what: str) -> StreamStats:
    losses = tuple(float(x) for x in msg.losses)
    correct = tuple(int(c) for c in msg.correct)
    count = int(msg.count)
    if not losses:
        raise DecodeError(f"{what}: no stream losses")
    if len(correct) != len(losses) + 1:
        raise DecodeError(f"{what}: {len(losses)} stream losses need {len(losses) + 1} correct counts "
                          f"(one per stream, then the decision's), got {len(correct)}")
    if any(c > count for c in correct):
        raise DecodeError(f"{what}: correct counts {list(correct)} exceed the batch of {count}")
    return StreamStats(losses, correct, count)


def encode_scores(s: Scores) -> pb.StepReply:
    """An inference reply: every stream's scores, then the decision's."""
    return pb.StepReply(step=s.step, streams=[encode_tensor(t) for t in s.streams],
                        decision=encode_tensor(s.decision))


def decode_scores(reply: pb.StepReply) -> Scores:
    """-> float32 scores; :class:`DecodeError` unless there are one or more stream tensors and a
    decision, all floating point, 2-D ``(B, K)`` and of one shape."""
    what = f"step {reply.step} reply"
    if not reply.streams:
        raise DecodeError(f"{what}: no stream scores")
    if not reply.HasField("decision"):
        raise DecodeError(f"{what}: no decision scores")
    streams = tuple(decode_tensor(t, f"{what} stream {i} scores") for i, t in enumerate(reply.streams))
    decision = decode_tensor(reply.decision, f"{what} decision scores")
    named = [*((f"stream {i}", t) for i, t in enumerate(streams)), ("decision", decision)]
    for name, t in named:
        if not t.is_floating_point():
            raise DecodeError(f"{what}: {name} scores must be floating point, got {t.dtype}")
        if t.dim() != 2:
            raise DecodeError(f"{what}: {name} scores must be (B, K), got shape {tuple(t.shape)}")
    shapes = {name: tuple(t.shape) for name, t in named}
    if len(set(shapes.values())) > 1:
        raise DecodeError(f"{what}: score tensors differ in shape: {shapes}")
    return Scores(int(reply.step), tuple(t.float() for t in streams), decision.float())
