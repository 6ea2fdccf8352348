from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: str | None = ..., shape: _Iterable[int] | None = ..., data: bytes | None = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("step", "train", "activations", "labels", "reply_dtype")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    REPLY_DTYPE_FIELD_NUMBER: _ClassVar[int]
    step: int
    train: bool
    activations: Tensor
    labels: Tensor
    reply_dtype: str
    def __init__(self, step: int | None = ..., train: bool | None = ..., activations: Tensor | _Mapping | None = ..., labels: Tensor | _Mapping | None = ..., reply_dtype: str | None = ...) -> None: ...

class StreamStats(_message.Message):
    __slots__ = ("losses", "correct", "count")
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    losses: _containers.RepeatedScalarFieldContainer[float]
    correct: _containers.RepeatedScalarFieldContainer[int]
    count: int
    def __init__(self, losses: _Iterable[float] | None = ..., correct: _Iterable[int] | None = ..., count: int | None = ...) -> None: ...

class StepReply(_message.Message):
    __slots__ = ("step", "grad", "stats", "streams", "decision")
    STEP_FIELD_NUMBER: _ClassVar[int]
    GRAD_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    step: int
    grad: Tensor
    stats: StreamStats
    streams: _containers.RepeatedCompositeFieldContainer[Tensor]
    decision: Tensor
    def __init__(self, step: int | None = ..., grad: Tensor | _Mapping | None = ..., stats: StreamStats | _Mapping | None = ..., streams: _Iterable[Tensor | _Mapping] | None = ..., decision: Tensor | _Mapping | None = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("width",)
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    width: int
    def __init__(self, width: int | None = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("site", "last_step", "width", "num_classes")
    SITE_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    site: str
    last_step: int
    width: int
    num_classes: int
    def __init__(self, site: str | None = ..., last_step: int | None = ..., width: int | None = ..., num_classes: int | None = ...) -> None: ...
