from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers

DESCRIPTOR: _descriptor.FileDescriptor

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(
        self, name: str | None = ..., dtype: str | None = ..., shape: _Iterable[int] | None = ...
    ) -> None: ...

class Scalar(_message.Message):
    __slots__ = ("f", "i", "s", "b")
    F_FIELD_NUMBER: _ClassVar[int]
    I_FIELD_NUMBER: _ClassVar[int]
    S_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    f: float
    i: int
    s: str
    b: bool
    def __init__(
        self, f: float | None = ..., i: int | None = ..., s: str | None = ..., b: bool | None = ...
    ) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("client_id", "protocol")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    protocol: int
    def __init__(self, client_id: str | None = ..., protocol: int | None = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("session", "client_id", "chunk_bytes", "max_message_bytes")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    session: str
    client_id: str
    chunk_bytes: int
    max_message_bytes: int
    def __init__(
        self,
        session: str | None = ...,
        client_id: str | None = ...,
        chunk_bytes: int | None = ...,
        max_message_bytes: int | None = ...,
    ) -> None: ...

class AttendRequest(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: str
    def __init__(self, session: str | None = ...) -> None: ...

class TaskHeader(_message.Message):
    __slots__ = (
        "task_id",
        "kind",
        "round",
        "seed",
        "feedback",
        "options",
        "tensors",
        "payload_bytes",
    )
    class FeedbackEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: str | None = ..., value: float | None = ...) -> None: ...

    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Scalar
        def __init__(
            self, key: str | None = ..., value: Scalar | _Mapping | None = ...
        ) -> None: ...

    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: str
    round: int
    seed: int
    feedback: _containers.ScalarMap[str, float]
    options: _containers.MessageMap[str, Scalar]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    payload_bytes: int
    def __init__(
        self,
        task_id: str | None = ...,
        kind: str | None = ...,
        round: int | None = ...,
        seed: int | None = ...,
        feedback: _Mapping[str, float] | None = ...,
        options: _Mapping[str, Scalar] | None = ...,
        tensors: _Iterable[TensorSpec | _Mapping] | None = ...,
        payload_bytes: int | None = ...,
    ) -> None: ...

class ResultHeader(_message.Message):
    __slots__ = (
        "session",
        "task_id",
        "seq",
        "kind",
        "num_examples",
        "loss",
        "metrics",
        "tensors",
        "payload_bytes",
        "error",
    )
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: str | None = ..., value: float | None = ...) -> None: ...

    SESSION_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    session: str
    task_id: str
    seq: int
    kind: str
    num_examples: int
    loss: float
    metrics: _containers.ScalarMap[str, float]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    payload_bytes: int
    error: str
    def __init__(
        self,
        session: str | None = ...,
        task_id: str | None = ...,
        seq: int | None = ...,
        kind: str | None = ...,
        num_examples: int | None = ...,
        loss: float | None = ...,
        metrics: _Mapping[str, float] | None = ...,
        tensors: _Iterable[TensorSpec | _Mapping] | None = ...,
        payload_bytes: int | None = ...,
        error: str | None = ...,
    ) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: int | None = ..., data: bytes | None = ...) -> None: ...

class Trailer(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: bytes
    def __init__(self, sha256: bytes | None = ...) -> None: ...

class Done(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: str | None = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Frame(_message.Message):
    __slots__ = ("task", "result", "chunk", "trailer", "done", "ping")
    TASK_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    task: TaskHeader
    result: ResultHeader
    chunk: Chunk
    trailer: Trailer
    done: Done
    ping: Ping
    def __init__(
        self,
        task: TaskHeader | _Mapping | None = ...,
        result: ResultHeader | _Mapping | None = ...,
        chunk: Chunk | _Mapping | None = ...,
        trailer: Trailer | _Mapping | None = ...,
        done: Done | _Mapping | None = ...,
        ping: Ping | _Mapping | None = ...,
    ) -> None: ...

class Ack(_message.Message):
    __slots__ = ("accepted", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    def __init__(self, accepted: bool | None = ..., reason: str | None = ...) -> None: ...
