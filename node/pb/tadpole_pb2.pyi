from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Consistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINEARIZABLE: _ClassVar[Consistency]
    SERIALIZABLE: _ClassVar[Consistency]

class TierConsistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_DEFAULT: _ClassVar[TierConsistency]
    ONE: _ClassVar[TierConsistency]
    QUORUM: _ClassVar[TierConsistency]
    ALL: _ClassVar[TierConsistency]
LINEARIZABLE: Consistency
SERIALIZABLE: Consistency
TIER_DEFAULT: TierConsistency
ONE: TierConsistency
QUORUM: TierConsistency
ALL: TierConsistency

class ResponseHeader(_message.Message):
    __slots__ = ("revision", "member_id", "raft_term", "leader_id")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    RAFT_TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    revision: int
    member_id: str
    raft_term: int
    leader_id: str
    def __init__(self, revision: _Optional[int] = ..., member_id: _Optional[str] = ..., raft_term: _Optional[int] = ..., leader_id: _Optional[str] = ...) -> None: ...

class KeyValue(_message.Message):
    __slots__ = ("key", "value", "create_revision", "mod_revision", "version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CREATE_REVISION_FIELD_NUMBER: _ClassVar[int]
    MOD_REVISION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., create_revision: _Optional[int] = ..., mod_revision: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("key", "consistency", "tier")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    key: str
    consistency: Consistency
    tier: str
    def __init__(self, key: _Optional[str] = ..., consistency: _Optional[_Union[Consistency, str]] = ..., tier: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("header", "found", "kv")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    KV_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    found: bool
    kv: KeyValue
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., found: _Optional[bool] = ..., kv: _Optional[_Union[KeyValue, _Mapping]] = ...) -> None: ...

class GetManyRequest(_message.Message):
    __slots__ = ("gets",)
    GETS_FIELD_NUMBER: _ClassVar[int]
    gets: _containers.RepeatedCompositeFieldContainer[GetRequest]
    def __init__(self, gets: _Optional[_Iterable[_Union[GetRequest, _Mapping]]] = ...) -> None: ...

class GetManyResult(_message.Message):
    __slots__ = ("code", "message", "trailers", "get")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRAILERS_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    trailers: _containers.RepeatedCompositeFieldContainer[Trailer]
    get: GetResponse
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., trailers: _Optional[_Iterable[_Union[Trailer, _Mapping]]] = ..., get: _Optional[_Union[GetResponse, _Mapping]] = ...) -> None: ...

class GetManyResponse(_message.Message):
    __slots__ = ("header", "results")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    results: _containers.RepeatedCompositeFieldContainer[GetManyResult]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., results: _Optional[_Iterable[_Union[GetManyResult, _Mapping]]] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("key", "value", "prev_kv", "tier", "request_id")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PREV_KV_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    prev_kv: bool
    tier: str
    request_id: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., prev_kv: _Optional[bool] = ..., tier: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("header", "kv", "prev_kv")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KV_FIELD_NUMBER: _ClassVar[int]
    PREV_KV_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    kv: KeyValue
    prev_kv: KeyValue
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., kv: _Optional[_Union[KeyValue, _Mapping]] = ..., prev_kv: _Optional[_Union[KeyValue, _Mapping]] = ...) -> None: ...

class PutManyRequest(_message.Message):
    __slots__ = ("puts",)
    PUTS_FIELD_NUMBER: _ClassVar[int]
    puts: _containers.RepeatedCompositeFieldContainer[PutRequest]
    def __init__(self, puts: _Optional[_Iterable[_Union[PutRequest, _Mapping]]] = ...) -> None: ...

class PutManyResult(_message.Message):
    __slots__ = ("code", "message", "trailers", "put")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRAILERS_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    trailers: _containers.RepeatedCompositeFieldContainer[Trailer]
    put: PutResponse
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., trailers: _Optional[_Iterable[_Union[Trailer, _Mapping]]] = ..., put: _Optional[_Union[PutResponse, _Mapping]] = ...) -> None: ...

class Trailer(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class PutManyResponse(_message.Message):
    __slots__ = ("header", "results")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    results: _containers.RepeatedCompositeFieldContainer[PutManyResult]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., results: _Optional[_Iterable[_Union[PutManyResult, _Mapping]]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("key", "prefix", "prev_kv", "tier", "request_id", "all_keys")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    PREV_KV_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ALL_KEYS_FIELD_NUMBER: _ClassVar[int]
    key: str
    prefix: bool
    prev_kv: bool
    tier: str
    request_id: str
    all_keys: bool
    def __init__(self, key: _Optional[str] = ..., prefix: _Optional[bool] = ..., prev_kv: _Optional[bool] = ..., tier: _Optional[str] = ..., request_id: _Optional[str] = ..., all_keys: _Optional[bool] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("header", "deleted", "prev_kvs")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    PREV_KVS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    deleted: int
    prev_kvs: _containers.RepeatedCompositeFieldContainer[KeyValue]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., deleted: _Optional[int] = ..., prev_kvs: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ...) -> None: ...

class RangeRequest(_message.Message):
    __slots__ = ("prefix", "limit", "start_after", "consistency", "tier")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    START_AFTER_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    limit: int
    start_after: str
    consistency: Consistency
    tier: str
    def __init__(self, prefix: _Optional[str] = ..., limit: _Optional[int] = ..., start_after: _Optional[str] = ..., consistency: _Optional[_Union[Consistency, str]] = ..., tier: _Optional[str] = ...) -> None: ...

class RangeResponse(_message.Message):
    __slots__ = ("header", "kvs", "more", "count")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KVS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    kvs: _containers.RepeatedCompositeFieldContainer[KeyValue]
    more: bool
    count: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., kvs: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ..., more: _Optional[bool] = ..., count: _Optional[int] = ...) -> None: ...

class Compare(_message.Message):
    __slots__ = ("key", "target", "result", "number", "value")
    class Target(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        VERSION: _ClassVar[Compare.Target]
        CREATE: _ClassVar[Compare.Target]
        MOD: _ClassVar[Compare.Target]
        VALUE: _ClassVar[Compare.Target]
    VERSION: Compare.Target
    CREATE: Compare.Target
    MOD: Compare.Target
    VALUE: Compare.Target
    class Result(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EQUAL: _ClassVar[Compare.Result]
        NOT_EQUAL: _ClassVar[Compare.Result]
        GREATER: _ClassVar[Compare.Result]
        LESS: _ClassVar[Compare.Result]
    EQUAL: Compare.Result
    NOT_EQUAL: Compare.Result
    GREATER: Compare.Result
    LESS: Compare.Result
    KEY_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    target: Compare.Target
    result: Compare.Result
    number: int
    value: bytes
    def __init__(self, key: _Optional[str] = ..., target: _Optional[_Union[Compare.Target, str]] = ..., result: _Optional[_Union[Compare.Result, str]] = ..., number: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...

class RequestOp(_message.Message):
    __slots__ = ("put", "delete", "range")
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    put: PutRequest
    delete: DeleteRequest
    range: RangeRequest
    def __init__(self, put: _Optional[_Union[PutRequest, _Mapping]] = ..., delete: _Optional[_Union[DeleteRequest, _Mapping]] = ..., range: _Optional[_Union[RangeRequest, _Mapping]] = ...) -> None: ...

class ResponseOp(_message.Message):
    __slots__ = ("put", "delete", "range")
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    put: PutResponse
    delete: DeleteResponse
    range: RangeResponse
    def __init__(self, put: _Optional[_Union[PutResponse, _Mapping]] = ..., delete: _Optional[_Union[DeleteResponse, _Mapping]] = ..., range: _Optional[_Union[RangeResponse, _Mapping]] = ...) -> None: ...

class TxnRequest(_message.Message):
    __slots__ = ("compare", "success", "failure", "tier", "request_id")
    COMPARE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    compare: _containers.RepeatedCompositeFieldContainer[Compare]
    success: _containers.RepeatedCompositeFieldContainer[RequestOp]
    failure: _containers.RepeatedCompositeFieldContainer[RequestOp]
    tier: str
    request_id: str
    def __init__(self, compare: _Optional[_Iterable[_Union[Compare, _Mapping]]] = ..., success: _Optional[_Iterable[_Union[RequestOp, _Mapping]]] = ..., failure: _Optional[_Iterable[_Union[RequestOp, _Mapping]]] = ..., tier: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class TxnResponse(_message.Message):
    __slots__ = ("header", "succeeded", "responses")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    succeeded: bool
    responses: _containers.RepeatedCompositeFieldContainer[ResponseOp]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., succeeded: _Optional[bool] = ..., responses: _Optional[_Iterable[_Union[ResponseOp, _Mapping]]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("key", "prefix", "start_revision", "tier")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    key: str
    prefix: bool
    start_revision: int
    tier: str
    def __init__(self, key: _Optional[str] = ..., prefix: _Optional[bool] = ..., start_revision: _Optional[int] = ..., tier: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("type", "kv", "prev_kv")
    class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PUT: _ClassVar[Event.EventType]
        DELETE: _ClassVar[Event.EventType]
    PUT: Event.EventType
    DELETE: Event.EventType
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KV_FIELD_NUMBER: _ClassVar[int]
    PREV_KV_FIELD_NUMBER: _ClassVar[int]
    type: Event.EventType
    kv: KeyValue
    prev_kv: KeyValue
    def __init__(self, type: _Optional[_Union[Event.EventType, str]] = ..., kv: _Optional[_Union[KeyValue, _Mapping]] = ..., prev_kv: _Optional[_Union[KeyValue, _Mapping]] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("header", "events", "compact_revision")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    events: _containers.RepeatedCompositeFieldContainer[Event]
    compact_revision: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., compact_revision: _Optional[int] = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("id", "address", "raft_role", "term", "commit_index", "applied_index", "status", "is_self", "match_index", "last_heard_s", "gossip_status", "incarnation", "gossip_last_heard_s", "tiers")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RAFT_ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    IS_SELF_FIELD_NUMBER: _ClassVar[int]
    MATCH_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARD_S_FIELD_NUMBER: _ClassVar[int]
    GOSSIP_STATUS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    GOSSIP_LAST_HEARD_S_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    id: str
    address: str
    raft_role: str
    term: int
    commit_index: int
    applied_index: int
    status: str
    is_self: bool
    match_index: int
    last_heard_s: float
    gossip_status: str
    incarnation: int
    gossip_last_heard_s: float
    tiers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., address: _Optional[str] = ..., raft_role: _Optional[str] = ..., term: _Optional[int] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., status: _Optional[str] = ..., is_self: _Optional[bool] = ..., match_index: _Optional[int] = ..., last_heard_s: _Optional[float] = ..., gossip_status: _Optional[str] = ..., incarnation: _Optional[int] = ..., gossip_last_heard_s: _Optional[float] = ..., tiers: _Optional[_Iterable[str]] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ("local_view",)
    LOCAL_VIEW_FIELD_NUMBER: _ClassVar[int]
    local_view: bool
    def __init__(self, local_view: _Optional[bool] = ...) -> None: ...

class MembersResponse(_message.Message):
    __slots__ = ("header", "members")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    members: _containers.RepeatedCompositeFieldContainer[Member]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("header", "id", "raft_role", "term", "commit_index", "applied_index", "log_entries", "keys", "has_quorum", "version", "uptime_s", "data_dir", "system_backend", "tiers", "load", "latency_bounds", "cpu_seconds", "rss_bytes", "backup_age_s", "backup_id", "backup_error")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    RAFT_ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    LOG_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    HAS_QUORUM_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_BACKEND_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BOUNDS_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    BACKUP_AGE_S_FIELD_NUMBER: _ClassVar[int]
    BACKUP_ID_FIELD_NUMBER: _ClassVar[int]
    BACKUP_ERROR_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    id: str
    raft_role: str
    term: int
    commit_index: int
    applied_index: int
    log_entries: int
    keys: int
    has_quorum: bool
    version: str
    uptime_s: float
    data_dir: str
    system_backend: str
    tiers: _containers.RepeatedCompositeFieldContainer[TierReplicaStatus]
    load: _containers.RepeatedCompositeFieldContainer[MethodLoad]
    latency_bounds: _containers.RepeatedScalarFieldContainer[float]
    cpu_seconds: float
    rss_bytes: int
    backup_age_s: float
    backup_id: str
    backup_error: str
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., id: _Optional[str] = ..., raft_role: _Optional[str] = ..., term: _Optional[int] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., log_entries: _Optional[int] = ..., keys: _Optional[int] = ..., has_quorum: _Optional[bool] = ..., version: _Optional[str] = ..., uptime_s: _Optional[float] = ..., data_dir: _Optional[str] = ..., system_backend: _Optional[str] = ..., tiers: _Optional[_Iterable[_Union[TierReplicaStatus, _Mapping]]] = ..., load: _Optional[_Iterable[_Union[MethodLoad, _Mapping]]] = ..., latency_bounds: _Optional[_Iterable[float]] = ..., cpu_seconds: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., backup_age_s: _Optional[float] = ..., backup_id: _Optional[str] = ..., backup_error: _Optional[str] = ...) -> None: ...

class MethodLoad(_message.Message):
    __slots__ = ("method", "count", "seconds", "buckets")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    method: str
    count: int
    seconds: float
    buckets: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, method: _Optional[str] = ..., count: _Optional[int] = ..., seconds: _Optional[float] = ..., buckets: _Optional[_Iterable[int]] = ...) -> None: ...

class TransferLeadershipRequest(_message.Message):
    __slots__ = ("target_id",)
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    target_id: str
    def __init__(self, target_id: _Optional[str] = ...) -> None: ...

class TransferLeadershipResponse(_message.Message):
    __slots__ = ("header", "leader_id")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    leader_id: str
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., leader_id: _Optional[str] = ...) -> None: ...

class CounterAdd(_message.Message):
    __slots__ = ("amount",)
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    amount: int
    def __init__(self, amount: _Optional[int] = ...) -> None: ...

class SetElements(_message.Message):
    __slots__ = ("elements",)
    ELEMENTS_FIELD_NUMBER: _ClassVar[int]
    elements: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, elements: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterSet(_message.Message):
    __slots__ = ("value_json",)
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    value_json: str
    def __init__(self, value_json: _Optional[str] = ...) -> None: ...

class LogAppend(_message.Message):
    __slots__ = ("entry_id", "payload_json")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    payload_json: str
    def __init__(self, entry_id: _Optional[str] = ..., payload_json: _Optional[str] = ...) -> None: ...

class MapSet(_message.Message):
    __slots__ = ("field", "value_json", "remove")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    field: str
    value_json: str
    remove: bool
    def __init__(self, field: _Optional[str] = ..., value_json: _Optional[str] = ..., remove: _Optional[bool] = ...) -> None: ...

class TierUpdateRequest(_message.Message):
    __slots__ = ("tier", "key", "counter_add", "set_add", "set_remove", "register_set", "log_append", "map_set", "consistency", "request_id")
    TIER_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    COUNTER_ADD_FIELD_NUMBER: _ClassVar[int]
    SET_ADD_FIELD_NUMBER: _ClassVar[int]
    SET_REMOVE_FIELD_NUMBER: _ClassVar[int]
    REGISTER_SET_FIELD_NUMBER: _ClassVar[int]
    LOG_APPEND_FIELD_NUMBER: _ClassVar[int]
    MAP_SET_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    tier: str
    key: str
    counter_add: CounterAdd
    set_add: SetElements
    set_remove: SetElements
    register_set: RegisterSet
    log_append: LogAppend
    map_set: MapSet
    consistency: TierConsistency
    request_id: str
    def __init__(self, tier: _Optional[str] = ..., key: _Optional[str] = ..., counter_add: _Optional[_Union[CounterAdd, _Mapping]] = ..., set_add: _Optional[_Union[SetElements, _Mapping]] = ..., set_remove: _Optional[_Union[SetElements, _Mapping]] = ..., register_set: _Optional[_Union[RegisterSet, _Mapping]] = ..., log_append: _Optional[_Union[LogAppend, _Mapping]] = ..., map_set: _Optional[_Union[MapSet, _Mapping]] = ..., consistency: _Optional[_Union[TierConsistency, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class TierUpdateManyRequest(_message.Message):
    __slots__ = ("updates",)
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    updates: _containers.RepeatedCompositeFieldContainer[TierUpdateRequest]
    def __init__(self, updates: _Optional[_Iterable[_Union[TierUpdateRequest, _Mapping]]] = ...) -> None: ...

class TierUpdateOutcome(_message.Message):
    __slots__ = ("code", "message", "outcome", "duplicate")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    outcome: str
    duplicate: bool
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., outcome: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class TierUpdateManyResponse(_message.Message):
    __slots__ = ("member_id", "results")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    results: _containers.RepeatedCompositeFieldContainer[TierUpdateOutcome]
    def __init__(self, member_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[TierUpdateOutcome, _Mapping]]] = ...) -> None: ...

class TierUpdateEachResult(_message.Message):
    __slots__ = ("code", "message", "trailers", "update")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRAILERS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    trailers: _containers.RepeatedCompositeFieldContainer[Trailer]
    update: TierUpdateResponse
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., trailers: _Optional[_Iterable[_Union[Trailer, _Mapping]]] = ..., update: _Optional[_Union[TierUpdateResponse, _Mapping]] = ...) -> None: ...

class TierUpdateEachResponse(_message.Message):
    __slots__ = ("member_id", "results")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    results: _containers.RepeatedCompositeFieldContainer[TierUpdateEachResult]
    def __init__(self, member_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[TierUpdateEachResult, _Mapping]]] = ...) -> None: ...

class TierValue(_message.Message):
    __slots__ = ("type", "value_json")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    type: str
    value_json: str
    def __init__(self, type: _Optional[str] = ..., value_json: _Optional[str] = ...) -> None: ...

class TierUpdateResponse(_message.Message):
    __slots__ = ("member_id", "value", "replicas", "hinted", "duplicate")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    HINTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    value: TierValue
    replicas: _containers.RepeatedScalarFieldContainer[str]
    hinted: _containers.RepeatedScalarFieldContainer[str]
    duplicate: bool
    def __init__(self, member_id: _Optional[str] = ..., value: _Optional[_Union[TierValue, _Mapping]] = ..., replicas: _Optional[_Iterable[str]] = ..., hinted: _Optional[_Iterable[str]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class TierReadRequest(_message.Message):
    __slots__ = ("tier", "key", "consistency")
    TIER_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    tier: str
    key: str
    consistency: TierConsistency
    def __init__(self, tier: _Optional[str] = ..., key: _Optional[str] = ..., consistency: _Optional[_Union[TierConsistency, str]] = ...) -> None: ...

class TierReadResponse(_message.Message):
    __slots__ = ("member_id", "found", "value", "replicas", "repaired")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REPAIRED_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    found: bool
    value: TierValue
    replicas: _containers.RepeatedScalarFieldContainer[str]
    repaired: int
    def __init__(self, member_id: _Optional[str] = ..., found: _Optional[bool] = ..., value: _Optional[_Union[TierValue, _Mapping]] = ..., replicas: _Optional[_Iterable[str]] = ..., repaired: _Optional[int] = ...) -> None: ...

class TierScanRequest(_message.Message):
    __slots__ = ("tier", "prefix", "limit", "start_after")
    TIER_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    START_AFTER_FIELD_NUMBER: _ClassVar[int]
    tier: str
    prefix: str
    limit: int
    start_after: str
    def __init__(self, tier: _Optional[str] = ..., prefix: _Optional[str] = ..., limit: _Optional[int] = ..., start_after: _Optional[str] = ...) -> None: ...

class TierScanResponse(_message.Message):
    __slots__ = ("keys", "more")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    more: bool
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., more: _Optional[bool] = ...) -> None: ...

class TierStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TierReplicaStatus(_message.Message):
    __slots__ = ("tier", "rf", "local_keys", "under_replicated", "hints_pending", "last_sync_age_s", "oldest_hint_age_s", "divergent")
    TIER_FIELD_NUMBER: _ClassVar[int]
    RF_FIELD_NUMBER: _ClassVar[int]
    LOCAL_KEYS_FIELD_NUMBER: _ClassVar[int]
    UNDER_REPLICATED_FIELD_NUMBER: _ClassVar[int]
    HINTS_PENDING_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_AGE_S_FIELD_NUMBER: _ClassVar[int]
    OLDEST_HINT_AGE_S_FIELD_NUMBER: _ClassVar[int]
    DIVERGENT_FIELD_NUMBER: _ClassVar[int]
    tier: str
    rf: int
    local_keys: int
    under_replicated: int
    hints_pending: int
    last_sync_age_s: float
    oldest_hint_age_s: float
    divergent: int
    def __init__(self, tier: _Optional[str] = ..., rf: _Optional[int] = ..., local_keys: _Optional[int] = ..., under_replicated: _Optional[int] = ..., hints_pending: _Optional[int] = ..., last_sync_age_s: _Optional[float] = ..., oldest_hint_age_s: _Optional[float] = ..., divergent: _Optional[int] = ...) -> None: ...

class TierStatusResponse(_message.Message):
    __slots__ = ("member_id", "tiers")
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    tiers: _containers.RepeatedCompositeFieldContainer[TierReplicaStatus]
    def __init__(self, member_id: _Optional[str] = ..., tiers: _Optional[_Iterable[_Union[TierReplicaStatus, _Mapping]]] = ...) -> None: ...

class TierKeysRequest(_message.Message):
    __slots__ = ("tier",)
    TIER_FIELD_NUMBER: _ClassVar[int]
    tier: str
    def __init__(self, tier: _Optional[str] = ...) -> None: ...

class TierKeysResponse(_message.Message):
    __slots__ = ("keys", "digests")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    digests: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., digests: _Optional[_Iterable[bytes]] = ...) -> None: ...

class DocPutRequest(_message.Message):
    __slots__ = ("tier", "id", "doc_json", "create", "causal_token")
    class CausalTokenEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TIER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    DOC_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    CAUSAL_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tier: str
    id: str
    doc_json: str
    create: bool
    causal_token: _containers.ScalarMap[str, int]
    def __init__(self, tier: _Optional[str] = ..., id: _Optional[str] = ..., doc_json: _Optional[str] = ..., create: _Optional[bool] = ..., causal_token: _Optional[_Mapping[str, int]] = ...) -> None: ...

class DocGetRequest(_message.Message):
    __slots__ = ("tier", "id", "consistency", "causal_token")
    class CausalTokenEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TIER_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    CAUSAL_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tier: str
    id: str
    consistency: TierConsistency
    causal_token: _containers.ScalarMap[str, int]
    def __init__(self, tier: _Optional[str] = ..., id: _Optional[str] = ..., consistency: _Optional[_Union[TierConsistency, str]] = ..., causal_token: _Optional[_Mapping[str, int]] = ...) -> None: ...

class CapabilityAddRequest(_message.Message):
    __slots__ = ("agent_id", "amounts", "causal_token")
    class AmountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class CausalTokenEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNTS_FIELD_NUMBER: _ClassVar[int]
    CAUSAL_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    amounts: _containers.ScalarMap[int, float]
    causal_token: _containers.ScalarMap[str, int]
    def __init__(self, agent_id: _Optional[str] = ..., amounts: _Optional[_Mapping[int, float]] = ..., causal_token: _Optional[_Mapping[str, int]] = ...) -> None: ...

class DocResponse(_message.Message):
    __slots__ = ("member_id", "found", "doc_json", "replicas", "hinted", "causal_token")
    class CausalTokenEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    DOC_JSON_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    HINTED_FIELD_NUMBER: _ClassVar[int]
    CAUSAL_TOKEN_FIELD_NUMBER: _ClassVar[int]
    member_id: str
    found: bool
    doc_json: str
    replicas: _containers.RepeatedScalarFieldContainer[str]
    hinted: _containers.RepeatedScalarFieldContainer[str]
    causal_token: _containers.ScalarMap[str, int]
    def __init__(self, member_id: _Optional[str] = ..., found: _Optional[bool] = ..., doc_json: _Optional[str] = ..., replicas: _Optional[_Iterable[str]] = ..., hinted: _Optional[_Iterable[str]] = ..., causal_token: _Optional[_Mapping[str, int]] = ...) -> None: ...

class MeshMembersRequest(_message.Message):
    __slots__ = ("mesh_id", "add", "remove")
    MESH_ID_FIELD_NUMBER: _ClassVar[int]
    ADD_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    mesh_id: str
    add: _containers.RepeatedScalarFieldContainer[str]
    remove: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, mesh_id: _Optional[str] = ..., add: _Optional[_Iterable[str]] = ..., remove: _Optional[_Iterable[str]] = ...) -> None: ...

class GraphQueryRequest(_message.Message):
    __slots__ = ("kind", "id", "limit", "start_after", "prefix")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        MESHES_OF_AGENT: _ClassVar[GraphQueryRequest.Kind]
        MEMBERS_OF_MESH: _ClassVar[GraphQueryRequest.Kind]
        NEIGHBOURS: _ClassVar[GraphQueryRequest.Kind]
    MESHES_OF_AGENT: GraphQueryRequest.Kind
    MEMBERS_OF_MESH: GraphQueryRequest.Kind
    NEIGHBOURS: GraphQueryRequest.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    START_AFTER_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    kind: GraphQueryRequest.Kind
    id: str
    limit: int
    start_after: str
    prefix: str
    def __init__(self, kind: _Optional[_Union[GraphQueryRequest.Kind, str]] = ..., id: _Optional[str] = ..., limit: _Optional[int] = ..., start_after: _Optional[str] = ..., prefix: _Optional[str] = ...) -> None: ...

class GraphQueryResponse(_message.Message):
    __slots__ = ("ids", "more")
    IDS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    more: bool
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., more: _Optional[bool] = ...) -> None: ...

class RaftBatch(_message.Message):
    __slots__ = ("from_id", "frames", "want_replies")
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    WANT_REPLIES_FIELD_NUMBER: _ClassVar[int]
    from_id: str
    frames: _containers.RepeatedScalarFieldContainer[bytes]
    want_replies: bool
    def __init__(self, from_id: _Optional[str] = ..., frames: _Optional[_Iterable[bytes]] = ..., want_replies: _Optional[bool] = ...) -> None: ...

class RaftAck(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, frames: _Optional[_Iterable[bytes]] = ...) -> None: ...

class BackupSystemRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BackupSystemPiece(_message.Message):
    __slots__ = ("revision", "keys", "data")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    revision: int
    keys: int
    data: bytes
    def __init__(self, revision: _Optional[int] = ..., keys: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class BackupRowsRequest(_message.Message):
    __slots__ = ("tier",)
    TIER_FIELD_NUMBER: _ClassVar[int]
    tier: str
    def __init__(self, tier: _Optional[str] = ...) -> None: ...

class BackupRow(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class BackupRowsPage(_message.Message):
    __slots__ = ("rows", "done", "node_id")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[BackupRow]
    done: bool
    node_id: str
    def __init__(self, rows: _Optional[_Iterable[_Union[BackupRow, _Mapping]]] = ..., done: _Optional[bool] = ..., node_id: _Optional[str] = ...) -> None: ...

class KeysStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KeysRotateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KeyCount(_message.Message):
    __slots__ = ("key", "values")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: str
    values: int
    def __init__(self, key: _Optional[str] = ..., values: _Optional[int] = ...) -> None: ...

class KeysStatusResponse(_message.Message):
    __slots__ = ("node_id", "enabled", "primary", "keyring", "journal", "snapshot", "store", "resealing", "last_error", "resealed")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    KEYRING_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    RESEALING_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    RESEALED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    enabled: bool
    primary: str
    keyring: _containers.RepeatedScalarFieldContainer[str]
    journal: str
    snapshot: str
    store: _containers.RepeatedCompositeFieldContainer[KeyCount]
    resealing: bool
    last_error: str
    resealed: int
    def __init__(self, node_id: _Optional[str] = ..., enabled: _Optional[bool] = ..., primary: _Optional[str] = ..., keyring: _Optional[_Iterable[str]] = ..., journal: _Optional[str] = ..., snapshot: _Optional[str] = ..., store: _Optional[_Iterable[_Union[KeyCount, _Mapping]]] = ..., resealing: _Optional[bool] = ..., last_error: _Optional[str] = ..., resealed: _Optional[int] = ...) -> None: ...

class AuditTailRequest(_message.Message):
    __slots__ = ("limit", "include_reads")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_READS_FIELD_NUMBER: _ClassVar[int]
    limit: int
    include_reads: bool
    def __init__(self, limit: _Optional[int] = ..., include_reads: _Optional[bool] = ...) -> None: ...

class AuditTailResponse(_message.Message):
    __slots__ = ("node_id", "records", "dropped")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    records: _containers.RepeatedScalarFieldContainer[str]
    dropped: int
    def __init__(self, node_id: _Optional[str] = ..., records: _Optional[_Iterable[str]] = ..., dropped: _Optional[int] = ...) -> None: ...

class AuthenticateRequest(_message.Message):
    __slots__ = ("user", "password")
    USER_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    user: str
    password: str
    def __init__(self, user: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class AuthenticateResponse(_message.Message):
    __slots__ = ("token", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at: float
    def __init__(self, token: _Optional[str] = ..., expires_at: _Optional[float] = ...) -> None: ...

class LedgerCall(_message.Message):
    __slots__ = ("args_json", "request_id")
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    args_json: str
    request_id: str
    def __init__(self, args_json: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class LedgerAnswer(_message.Message):
    __slots__ = ("header", "result_json")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    result_json: str
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., result_json: _Optional[str] = ...) -> None: ...

class PeerMessage(_message.Message):
    __slots__ = ("from_id", "payload", "from_address")
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    from_id: str
    payload: bytes
    from_address: str
    def __init__(self, from_id: _Optional[str] = ..., payload: _Optional[bytes] = ..., from_address: _Optional[str] = ...) -> None: ...
