from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar
from typing import Union as _Union

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
    def __init__(self, step: int | None = ..., train: bool | None = ..., activations: _Union[Tensor, _Mapping] | None = ..., labels: _Union[Tensor, _Mapping] | None = ..., reply_dtype: str | None = ...) -> None: ...

class StreamStats(_message.Message):
    __slots__ = ("loss_a", "loss_f", "loss_r", "correct_a", "correct_f", "correct_r", "correct_awa", "count")
    LOSS_A_FIELD_NUMBER: _ClassVar[int]
    LOSS_F_FIELD_NUMBER: _ClassVar[int]
    LOSS_R_FIELD_NUMBER: _ClassVar[int]
    CORRECT_A_FIELD_NUMBER: _ClassVar[int]
    CORRECT_F_FIELD_NUMBER: _ClassVar[int]
    CORRECT_R_FIELD_NUMBER: _ClassVar[int]
    CORRECT_AWA_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    loss_a: float
    loss_f: float
    loss_r: float
    correct_a: int
    correct_f: int
    correct_r: int
    correct_awa: int
    count: int
    def __init__(self, loss_a: float | None = ..., loss_f: float | None = ..., loss_r: float | None = ..., correct_a: int | None = ..., correct_f: int | None = ..., correct_r: int | None = ..., correct_awa: int | None = ..., count: int | None = ...) -> None: ...

class StepReply(_message.Message):
    __slots__ = ("step", "grad", "stats", "s_a", "s_f", "s_r", "s_awa")
    STEP_FIELD_NUMBER: _ClassVar[int]
    GRAD_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    S_A_FIELD_NUMBER: _ClassVar[int]
    S_F_FIELD_NUMBER: _ClassVar[int]
    S_R_FIELD_NUMBER: _ClassVar[int]
    S_AWA_FIELD_NUMBER: _ClassVar[int]
    step: int
    grad: Tensor
    stats: StreamStats
    s_a: Tensor
    s_f: Tensor
    s_r: Tensor
    s_awa: Tensor
    def __init__(self, step: int | None = ..., grad: _Union[Tensor, _Mapping] | None = ..., stats: _Union[StreamStats, _Mapping] | None = ..., s_a: _Union[Tensor, _Mapping] | None = ..., s_f: _Union[Tensor, _Mapping] | None = ..., s_r: _Union[Tensor, _Mapping] | None = ..., s_awa: _Union[Tensor, _Mapping] | None = ...) -> None: ...

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
