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
        "secagg",
        "uplink",
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
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    UPLINK_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: str
    round: int
    seed: int
    feedback: _containers.ScalarMap[str, float]
    options: _containers.MessageMap[str, Scalar]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    payload_bytes: int
    secagg: SecAggRequest
    uplink: Uplink
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
        secagg: SecAggRequest | _Mapping | None = ...,
        uplink: Uplink | _Mapping | None = ...,
    ) -> None: ...

class Uplink(_message.Message):
    __slots__ = ("pipeline", "seed", "round_seed")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ROUND_SEED_FIELD_NUMBER: _ClassVar[int]
    pipeline: str
    seed: int
    round_seed: int
    def __init__(
        self, pipeline: str | None = ..., seed: int | None = ..., round_seed: int | None = ...
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
        "secagg",
        "encoded",
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
    SECAGG_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
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
    secagg: SecAggReply
    encoded: bool
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
        secagg: SecAggReply | _Mapping | None = ...,
        encoded: bool | None = ...,
    ) -> None: ...

class SecAggSetup(_message.Message):
    __slots__ = (
        "participants",
        "graph",
        "neighbours",
        "expected_dropout",
        "failure",
        "complete_up_to",
        "threshold",
        "bits",
        "clip",
        "max_weight",
        "clip_norm",
        "noise_std",
        "graph_seed",
        "weighted",
        "randk_fraction",
        "randk_unbiased",
    )
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DROPOUT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_UP_TO_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    CLIP_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CLIP_NORM_FIELD_NUMBER: _ClassVar[int]
    NOISE_STD_FIELD_NUMBER: _ClassVar[int]
    GRAPH_SEED_FIELD_NUMBER: _ClassVar[int]
    WEIGHTED_FIELD_NUMBER: _ClassVar[int]
    RANDK_FRACTION_FIELD_NUMBER: _ClassVar[int]
    RANDK_UNBIASED_FIELD_NUMBER: _ClassVar[int]
    participants: _containers.RepeatedScalarFieldContainer[str]
    graph: str
    neighbours: int
    expected_dropout: float
    failure: float
    complete_up_to: int
    threshold: int
    bits: int
    clip: float
    max_weight: float
    clip_norm: float
    noise_std: float
    graph_seed: int
    weighted: bool
    randk_fraction: float
    randk_unbiased: bool
    def __init__(
        self,
        participants: _Iterable[str] | None = ...,
        graph: str | None = ...,
        neighbours: int | None = ...,
        expected_dropout: float | None = ...,
        failure: float | None = ...,
        complete_up_to: int | None = ...,
        threshold: int | None = ...,
        bits: int | None = ...,
        clip: float | None = ...,
        max_weight: float | None = ...,
        clip_norm: float | None = ...,
        noise_std: float | None = ...,
        graph_seed: int | None = ...,
        weighted: bool | None = ...,
        randk_fraction: float | None = ...,
        randk_unbiased: bool | None = ...,
    ) -> None: ...

class SecAggKeys(_message.Message):
    __slots__ = ("cipher", "mask", "seed_commitment")
    CIPHER_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    SEED_COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    cipher: bytes
    mask: bytes
    seed_commitment: bytes
    def __init__(
        self,
        cipher: bytes | None = ...,
        mask: bytes | None = ...,
        seed_commitment: bytes | None = ...,
    ) -> None: ...

class SecAggRequest(_message.Message):
    __slots__ = ("stage", "setup", "keys", "ciphertexts", "active", "survivors", "dropped")
    class KeysEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SecAggKeys
        def __init__(
            self, key: str | None = ..., value: SecAggKeys | _Mapping | None = ...
        ) -> None: ...

    class CiphertextsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: str | None = ..., value: bytes | None = ...) -> None: ...

    STAGE_FIELD_NUMBER: _ClassVar[int]
    SETUP_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    SURVIVORS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    stage: str
    setup: SecAggSetup
    keys: _containers.MessageMap[str, SecAggKeys]
    ciphertexts: _containers.ScalarMap[str, bytes]
    active: _containers.RepeatedScalarFieldContainer[str]
    survivors: _containers.RepeatedScalarFieldContainer[str]
    dropped: _containers.RepeatedScalarFieldContainer[str]
    def __init__(
        self,
        stage: str | None = ...,
        setup: SecAggSetup | _Mapping | None = ...,
        keys: _Mapping[str, SecAggKeys] | None = ...,
        ciphertexts: _Mapping[str, bytes] | None = ...,
        active: _Iterable[str] | None = ...,
        survivors: _Iterable[str] | None = ...,
        dropped: _Iterable[str] | None = ...,
    ) -> None: ...

class SecAggReply(_message.Message):
    __slots__ = ("keys", "ciphertexts", "failed", "seed_shares", "key_shares")
    class CiphertextsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: str | None = ..., value: bytes | None = ...) -> None: ...

    class SeedSharesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: str | None = ..., value: bytes | None = ...) -> None: ...

    class KeySharesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: str | None = ..., value: bytes | None = ...) -> None: ...

    KEYS_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    SEED_SHARES_FIELD_NUMBER: _ClassVar[int]
    KEY_SHARES_FIELD_NUMBER: _ClassVar[int]
    keys: SecAggKeys
    ciphertexts: _containers.ScalarMap[str, bytes]
    failed: _containers.RepeatedScalarFieldContainer[str]
    seed_shares: _containers.ScalarMap[str, bytes]
    key_shares: _containers.ScalarMap[str, bytes]
    def __init__(
        self,
        keys: SecAggKeys | _Mapping | None = ...,
        ciphertexts: _Mapping[str, bytes] | None = ...,
        failed: _Iterable[str] | None = ...,
        seed_shares: _Mapping[str, bytes] | None = ...,
        key_shares: _Mapping[str, bytes] | None = ...,
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
