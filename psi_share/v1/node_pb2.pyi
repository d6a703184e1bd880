from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ValueHolder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VALUE_HOLDER_UNSPECIFIED: _ClassVar[ValueHolder]
    VALUE_HOLDER_REQUESTER: _ClassVar[ValueHolder]
    VALUE_HOLDER_RESPONDER: _ClassVar[ValueHolder]
VALUE_HOLDER_UNSPECIFIED: ValueHolder
VALUE_HOLDER_REQUESTER: ValueHolder
VALUE_HOLDER_RESPONDER: ValueHolder

class KindVersion(_message.Message):
    __slots__ = ("kind", "version")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    kind: str
    version: int
    def __init__(self, kind: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class PromptParameters(_message.Message):
    __slots__ = ("normalisation_version", "shingle_words", "minhash", "bands", "rows", "seed_id")
    NORMALISATION_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHINGLE_WORDS_FIELD_NUMBER: _ClassVar[int]
    MINHASH_FIELD_NUMBER: _ClassVar[int]
    BANDS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    SEED_ID_FIELD_NUMBER: _ClassVar[int]
    normalisation_version: int
    shingle_words: int
    minhash: str
    bands: int
    rows: int
    seed_id: str
    def __init__(self, normalisation_version: _Optional[int] = ..., shingle_words: _Optional[int] = ..., minhash: _Optional[str] = ..., bands: _Optional[int] = ..., rows: _Optional[int] = ..., seed_id: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("protocol_version", "node_name", "software_version", "openmined_psi_version", "canonicalization", "datasets", "protocols", "prompt_params")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    OPENMINED_PSI_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANONICALIZATION_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOLS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_PARAMS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    node_name: str
    software_version: str
    openmined_psi_version: str
    canonicalization: _containers.RepeatedCompositeFieldContainer[KindVersion]
    datasets: _containers.RepeatedCompositeFieldContainer[ExposedDataset]
    protocols: _containers.RepeatedScalarFieldContainer[str]
    prompt_params: PromptParameters
    def __init__(self, protocol_version: _Optional[int] = ..., node_name: _Optional[str] = ..., software_version: _Optional[str] = ..., openmined_psi_version: _Optional[str] = ..., canonicalization: _Optional[_Iterable[_Union[KindVersion, _Mapping]]] = ..., datasets: _Optional[_Iterable[_Union[ExposedDataset, _Mapping]]] = ..., protocols: _Optional[_Iterable[str]] = ..., prompt_params: _Optional[_Union[PromptParameters, _Mapping]] = ...) -> None: ...

class PsiOpenRequest(_message.Message):
    __slots__ = ("protocol_version", "dataset", "kinds", "set_size", "reveal_intersection", "job_id", "setup_buckets_version", "prompt_params")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    REVEAL_INTERSECTION_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SETUP_BUCKETS_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_PARAMS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    dataset: str
    kinds: _containers.RepeatedCompositeFieldContainer[KindVersion]
    set_size: int
    reveal_intersection: bool
    job_id: str
    setup_buckets_version: int
    prompt_params: PromptParameters
    def __init__(self, protocol_version: _Optional[int] = ..., dataset: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[KindVersion, _Mapping]]] = ..., set_size: _Optional[int] = ..., reveal_intersection: bool = ..., job_id: _Optional[str] = ..., setup_buckets_version: _Optional[int] = ..., prompt_params: _Optional[_Union[PromptParameters, _Mapping]] = ...) -> None: ...

class PsiOpenResponse(_message.Message):
    __slots__ = ("protocol_version", "session_id", "false_positive_rate", "max_set_size", "openmined_psi_version", "session_ttl_seconds", "min_result", "responder_set_size", "setup_buckets_version", "bucket_count")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FALSE_POSITIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    OPENMINED_PSI_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_RESULT_FIELD_NUMBER: _ClassVar[int]
    RESPONDER_SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    SETUP_BUCKETS_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_COUNT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session_id: str
    false_positive_rate: float
    max_set_size: int
    openmined_psi_version: str
    session_ttl_seconds: int
    min_result: int
    responder_set_size: int
    setup_buckets_version: int
    bucket_count: int
    def __init__(self, protocol_version: _Optional[int] = ..., session_id: _Optional[str] = ..., false_positive_rate: _Optional[float] = ..., max_set_size: _Optional[int] = ..., openmined_psi_version: _Optional[str] = ..., session_ttl_seconds: _Optional[int] = ..., min_result: _Optional[int] = ..., responder_set_size: _Optional[int] = ..., setup_buckets_version: _Optional[int] = ..., bucket_count: _Optional[int] = ...) -> None: ...

class PsiBucketedSetup(_message.Message):
    __slots__ = ("protocol_version", "setup_buckets_version", "bucket_sizes", "setups")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SETUP_BUCKETS_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_SIZES_FIELD_NUMBER: _ClassVar[int]
    SETUPS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    setup_buckets_version: int
    bucket_sizes: _containers.RepeatedScalarFieldContainer[int]
    setups: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, protocol_version: _Optional[int] = ..., setup_buckets_version: _Optional[int] = ..., bucket_sizes: _Optional[_Iterable[int]] = ..., setups: _Optional[_Iterable[bytes]] = ...) -> None: ...

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

class SumOpenRequest(_message.Message):
    __slots__ = ("protocol_version", "dataset", "kind", "set_size", "value_holder", "key_bits", "job_id")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    VALUE_HOLDER_FIELD_NUMBER: _ClassVar[int]
    KEY_BITS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    dataset: str
    kind: KindVersion
    set_size: int
    value_holder: ValueHolder
    key_bits: int
    job_id: str
    def __init__(self, protocol_version: _Optional[int] = ..., dataset: _Optional[str] = ..., kind: _Optional[_Union[KindVersion, _Mapping]] = ..., set_size: _Optional[int] = ..., value_holder: _Optional[_Union[ValueHolder, str]] = ..., key_bits: _Optional[int] = ..., job_id: _Optional[str] = ...) -> None: ...

class SumOpenResponse(_message.Message):
    __slots__ = ("protocol_version", "session_id", "max_set_size", "session_ttl_seconds")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    SESSION_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session_id: str
    max_set_size: int
    session_ttl_seconds: int
    def __init__(self, protocol_version: _Optional[int] = ..., session_id: _Optional[str] = ..., max_set_size: _Optional[int] = ..., session_ttl_seconds: _Optional[int] = ...) -> None: ...

class SumMessage(_message.Message):
    __slots__ = ("protocol_version", "step", "points", "paired_points", "ciphertexts", "public_key", "count", "sum", "key_proof")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    PAIRED_POINTS_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SUM_FIELD_NUMBER: _ClassVar[int]
    KEY_PROOF_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    step: str
    points: bytes
    paired_points: bytes
    ciphertexts: bytes
    public_key: bytes
    count: int
    sum: bytes
    key_proof: bytes
    def __init__(self, protocol_version: _Optional[int] = ..., step: _Optional[str] = ..., points: _Optional[bytes] = ..., paired_points: _Optional[bytes] = ..., ciphertexts: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., count: _Optional[int] = ..., sum: _Optional[bytes] = ..., key_proof: _Optional[bytes] = ...) -> None: ...

class FederationSigned(_message.Message):
    __slots__ = ("body", "signature", "certificate")
    BODY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    signature: bytes
    certificate: bytes
    def __init__(self, body: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., certificate: _Optional[bytes] = ...) -> None: ...

class FederationRoute(_message.Message):
    __slots__ = ("version", "run_id", "metric", "members", "min_contributors", "public_key", "issued_at", "expires_at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MIN_CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    version: int
    run_id: str
    metric: str
    members: _containers.RepeatedScalarFieldContainer[str]
    min_contributors: int
    public_key: bytes
    issued_at: int
    expires_at: int
    def __init__(self, version: _Optional[int] = ..., run_id: _Optional[str] = ..., metric: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., min_contributors: _Optional[int] = ..., public_key: _Optional[bytes] = ..., issued_at: _Optional[int] = ..., expires_at: _Optional[int] = ...) -> None: ...

class FederationMemberKey(_message.Message):
    __slots__ = ("run_id", "route_sha256", "member", "mask_key")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_SHA256_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    MASK_KEY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    route_sha256: bytes
    member: str
    mask_key: bytes
    def __init__(self, run_id: _Optional[str] = ..., route_sha256: _Optional[bytes] = ..., member: _Optional[str] = ..., mask_key: _Optional[bytes] = ...) -> None: ...

class FederationFinal(_message.Message):
    __slots__ = ("run_id", "route_sha256", "ciphertext")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_SHA256_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    route_sha256: bytes
    ciphertext: bytes
    def __init__(self, run_id: _Optional[str] = ..., route_sha256: _Optional[bytes] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class FederationJoinRequest(_message.Message):
    __slots__ = ("protocol_version", "run_id", "signed_route", "job_id")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNED_ROUTE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    run_id: str
    signed_route: FederationSigned
    job_id: str
    def __init__(self, protocol_version: _Optional[int] = ..., run_id: _Optional[str] = ..., signed_route: _Optional[_Union[FederationSigned, _Mapping]] = ..., job_id: _Optional[str] = ...) -> None: ...

class FederationJoinResponse(_message.Message):
    __slots__ = ("protocol_version", "member_key")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MEMBER_KEY_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    member_key: FederationSigned
    def __init__(self, protocol_version: _Optional[int] = ..., member_key: _Optional[_Union[FederationSigned, _Mapping]] = ...) -> None: ...

class FederationPassRequest(_message.Message):
    __slots__ = ("protocol_version", "run_id", "ciphertext", "job_id", "signed_route", "member_keys")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNED_ROUTE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_KEYS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    run_id: str
    ciphertext: bytes
    job_id: str
    signed_route: FederationSigned
    member_keys: _containers.RepeatedCompositeFieldContainer[FederationSigned]
    def __init__(self, protocol_version: _Optional[int] = ..., run_id: _Optional[str] = ..., ciphertext: _Optional[bytes] = ..., job_id: _Optional[str] = ..., signed_route: _Optional[_Union[FederationSigned, _Mapping]] = ..., member_keys: _Optional[_Iterable[_Union[FederationSigned, _Mapping]]] = ...) -> None: ...

class FederationPassResponse(_message.Message):
    __slots__ = ("protocol_version", "final")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    final: FederationSigned
    def __init__(self, protocol_version: _Optional[int] = ..., final: _Optional[_Union[FederationSigned, _Mapping]] = ...) -> None: ...

class FederationReleaseRequest(_message.Message):
    __slots__ = ("protocol_version", "run_id", "metric", "contributors", "total")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    run_id: str
    metric: str
    contributors: int
    total: bytes
    def __init__(self, protocol_version: _Optional[int] = ..., run_id: _Optional[str] = ..., metric: _Optional[str] = ..., contributors: _Optional[int] = ..., total: _Optional[bytes] = ...) -> None: ...

class FederationReleaseResponse(_message.Message):
    __slots__ = ("protocol_version",)
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    def __init__(self, protocol_version: _Optional[int] = ...) -> None: ...

class CardinalityOpenRequest(_message.Message):
    __slots__ = ("protocol_version", "dataset", "kinds", "set_size", "job_id", "prompt_params")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_PARAMS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    dataset: str
    kinds: _containers.RepeatedCompositeFieldContainer[KindVersion]
    set_size: int
    job_id: str
    prompt_params: PromptParameters
    def __init__(self, protocol_version: _Optional[int] = ..., dataset: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[KindVersion, _Mapping]]] = ..., set_size: _Optional[int] = ..., job_id: _Optional[str] = ..., prompt_params: _Optional[_Union[PromptParameters, _Mapping]] = ...) -> None: ...

class CardinalityOpenResponse(_message.Message):
    __slots__ = ("protocol_version", "session_id", "max_set_size", "session_ttl_seconds", "min_result")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_SET_SIZE_FIELD_NUMBER: _ClassVar[int]
    SESSION_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_RESULT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    session_id: str
    max_set_size: int
    session_ttl_seconds: int
    min_result: int
    def __init__(self, protocol_version: _Optional[int] = ..., session_id: _Optional[str] = ..., max_set_size: _Optional[int] = ..., session_ttl_seconds: _Optional[int] = ..., min_result: _Optional[int] = ...) -> None: ...

class CardinalityMessage(_message.Message):
    __slots__ = ("protocol_version", "step", "points", "key_point", "decoys", "count", "withheld", "min_result")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    KEY_POINT_FIELD_NUMBER: _ClassVar[int]
    DECOYS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    WITHHELD_FIELD_NUMBER: _ClassVar[int]
    MIN_RESULT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    step: str
    points: bytes
    key_point: bytes
    decoys: int
    count: int
    withheld: bool
    min_result: int
    def __init__(self, protocol_version: _Optional[int] = ..., step: _Optional[str] = ..., points: _Optional[bytes] = ..., key_point: _Optional[bytes] = ..., decoys: _Optional[int] = ..., count: _Optional[int] = ..., withheld: bool = ..., min_result: _Optional[int] = ...) -> None: ...

class SignedHead(_message.Message):
    __slots__ = ("node", "count", "head", "time_ns", "audit_key", "signature", "witnessed_at_ns")
    NODE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    TIME_NS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    WITNESSED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    node: str
    count: int
    head: bytes
    time_ns: int
    audit_key: bytes
    signature: bytes
    witnessed_at_ns: int
    def __init__(self, node: _Optional[str] = ..., count: _Optional[int] = ..., head: _Optional[bytes] = ..., time_ns: _Optional[int] = ..., audit_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., witnessed_at_ns: _Optional[int] = ...) -> None: ...

class AuditKeyBinding(_message.Message):
    __slots__ = ("node", "audit_key", "certificate", "signature")
    NODE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_KEY_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    node: str
    audit_key: bytes
    certificate: bytes
    signature: bytes
    def __init__(self, node: _Optional[str] = ..., audit_key: _Optional[bytes] = ..., certificate: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class WitnessHeadsRequest(_message.Message):
    __slots__ = ("protocol_version", "head", "binding")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    BINDING_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    head: SignedHead
    binding: AuditKeyBinding
    def __init__(self, protocol_version: _Optional[int] = ..., head: _Optional[_Union[SignedHead, _Mapping]] = ..., binding: _Optional[_Union[AuditKeyBinding, _Mapping]] = ...) -> None: ...

class WitnessHeadsResponse(_message.Message):
    __slots__ = ("protocol_version", "head", "binding")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    BINDING_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    head: SignedHead
    binding: AuditKeyBinding
    def __init__(self, protocol_version: _Optional[int] = ..., head: _Optional[_Union[SignedHead, _Mapping]] = ..., binding: _Optional[_Union[AuditKeyBinding, _Mapping]] = ...) -> None: ...

class GetWitnessedHeadsRequest(_message.Message):
    __slots__ = ("protocol_version",)
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    def __init__(self, protocol_version: _Optional[int] = ...) -> None: ...

class GetWitnessedHeadsResponse(_message.Message):
    __slots__ = ("protocol_version", "heads", "bindings")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    heads: _containers.RepeatedCompositeFieldContainer[SignedHead]
    bindings: _containers.RepeatedCompositeFieldContainer[AuditKeyBinding]
    def __init__(self, protocol_version: _Optional[int] = ..., heads: _Optional[_Iterable[_Union[SignedHead, _Mapping]]] = ..., bindings: _Optional[_Iterable[_Union[AuditKeyBinding, _Mapping]]] = ...) -> None: ...
