from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KindVersion(_message.Message):
    __slots__ = ("kind", "version")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    kind: str
    version: int
    def __init__(self, kind: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ExposedDataset(_message.Message):
    __slots__ = ("name", "kinds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class NodeInfoRequest(_message.Message):
    __slots__ = ("protocol_version",)
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    def __init__(self, protocol_version: _Optional[int] = ...) -> None: ...

class NodeInfoResponse(_message.Message):
    __slots__ = ("protocol_version", "node_name", "software_version", "openmined_psi_version", "canonicalization", "datasets", "protocols")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    OPENMINED_PSI_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANONICALIZATION_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOLS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    node_name: str
    software_version: str
    openmined_psi_version: str
    canonicalization: _containers.RepeatedCompositeFieldContainer[KindVersion]
    datasets: _containers.RepeatedCompositeFieldContainer[ExposedDataset]
    protocols: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, protocol_version: _Optional[int] = ..., node_name: _Optional[str] = ..., software_version: _Optional[str] = ..., openmined_psi_version: _Optional[str] = ..., canonicalization: _Optional[_Iterable[_Union[KindVersion, _Mapping]]] = ..., datasets: _Optional[_Iterable[_Union[ExposedDataset, _Mapping]]] = ..., protocols: _Optional[_Iterable[str]] = ...) -> None: ...

class PsiOpenRequest(_message.Message):
    __slots__ = ("protocol_version", "dataset", "kinds", "set_size", "reveal_intersection", "job_id")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    REVEAL_INTERSECTION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    dataset: str
    kinds: _containers.RepeatedCompositeFieldContainer[KindVersion]
    set_size: int
    reveal_intersection: bool
    job_id: str
    def __init__(self, protocol_version: _Optional[int] = ..., dataset: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[KindVersion, _Mapping]]] = ..., set_size: _Optional[int] = ..., reveal_intersection: bool = ..., job_id: _Optional[str] = ...) -> None: ...

class PsiOpenResponse(_message.Message):
    __slots__ = ("protocol_version", "session_id", "false_positive_rate", "max_set_size", "openmined_psi_version", "session_ttl_seconds", "min_result")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FALSE_POSITIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    OPENMINED_PSI_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_RESULT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session_id: str
    false_positive_rate: float
    max_set_size: int
    openmined_psi_version: str
    session_ttl_seconds: int
    min_result: int
    def __init__(self, protocol_version: _Optional[int] = ..., session_id: _Optional[str] = ..., false_positive_rate: _Optional[float] = ..., max_set_size: _Optional[int] = ..., openmined_psi_version: _Optional[str] = ..., session_ttl_seconds: _Optional[int] = ..., min_result: _Optional[int] = ...) -> None: ...

class PsiSetupRequest(_message.Message):
    __slots__ = ("protocol_version", "session_id")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session_id: str
    def __init__(self, protocol_version: _Optional[int] = ..., session_id: _Optional[str] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("protocol_version", "session_id", "index", "last", "total_bytes", "data")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session_id: str
    index: int
    last: bool
    total_bytes: int
    data: bytes
    def __init__(self, protocol_version: _Optional[int] = ..., session_id: _Optional[str] = ..., index: _Optional[int] = ..., last: bool = ..., total_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class PsiCloseRequest(_message.Message):
    __slots__ = ("protocol_version", "session_id", "outcome")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session_id: str
    outcome: str
    def __init__(self, protocol_version: _Optional[int] = ..., session_id: _Optional[str] = ..., outcome: _Optional[str] = ...) -> None: ...

class PsiCloseResponse(_message.Message):
    __slots__ = ("protocol_version",)
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    def __init__(self, protocol_version: _Optional[int] = ...) -> None: ...
