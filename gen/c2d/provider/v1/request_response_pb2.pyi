from c2d.common.v1 import job_pb2 as _job_pb2
from c2d.common.v1 import job_status_pb2 as _job_status_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Authorization(_message.Message):
    __slots__ = ("nonce", "signature")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    signature: str
    def __init__(self, nonce: _Optional[int] = ..., signature: _Optional[str] = ...) -> None: ...

class AssetOrder(_message.Message):
    __slots__ = ("did", "tx_id")
    DID_FIELD_NUMBER: _ClassVar[int]
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    did: str
    tx_id: str
    def __init__(self, did: _Optional[str] = ..., tx_id: _Optional[str] = ...) -> None: ...

class RawAlgorithm(_message.Message):
    __slots__ = ("code", "entrypoint", "runtime")
    CODE_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    code: bytes
    entrypoint: _containers.RepeatedScalarFieldContainer[str]
    runtime: str
    def __init__(self, code: _Optional[bytes] = ..., entrypoint: _Optional[_Iterable[str]] = ..., runtime: _Optional[str] = ...) -> None: ...

class StartRequest(_message.Message):
    __slots__ = ("consumer_address", "dataset_did", "additional_dataset_dids", "algorithm_did", "raw_algorithm", "environment_id", "algorithm_parameters", "request_id", "orders", "auth")
    CONSUMER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DATASET_DID_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_DATASET_DIDS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_DID_FIELD_NUMBER: _ClassVar[int]
    RAW_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    consumer_address: str
    dataset_did: str
    additional_dataset_dids: _containers.RepeatedScalarFieldContainer[str]
    algorithm_did: str
    raw_algorithm: RawAlgorithm
    environment_id: str
    algorithm_parameters: _struct_pb2.Struct
    request_id: str
    orders: _containers.RepeatedCompositeFieldContainer[AssetOrder]
    auth: Authorization
    def __init__(self, consumer_address: _Optional[str] = ..., dataset_did: _Optional[str] = ..., additional_dataset_dids: _Optional[_Iterable[str]] = ..., algorithm_did: _Optional[str] = ..., raw_algorithm: _Optional[_Union[RawAlgorithm, _Mapping]] = ..., environment_id: _Optional[str] = ..., algorithm_parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ..., orders: _Optional[_Iterable[_Union[AssetOrder, _Mapping]]] = ..., auth: _Optional[_Union[Authorization, _Mapping]] = ...) -> None: ...

class StartResponse(_message.Message):
    __slots__ = ("job_id", "job")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    job: _job_pb2.Job
    def __init__(self, job_id: _Optional[str] = ..., job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class GetJobDetailsRequest(_message.Message):
    __slots__ = ("consumer_address", "job_id", "auth")
    CONSUMER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    consumer_address: str
    job_id: str
    auth: Authorization
    def __init__(self, consumer_address: _Optional[str] = ..., job_id: _Optional[str] = ..., auth: _Optional[_Union[Authorization, _Mapping]] = ...) -> None: ...

class GetJobDetailsResponse(_message.Message):
    __slots__ = ("job", "history")
    JOB_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    history: _containers.RepeatedCompositeFieldContainer[_job_pb2.JobEvent]
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ..., history: _Optional[_Iterable[_Union[_job_pb2.JobEvent, _Mapping]]] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ("consumer_address", "job_id", "auth")
    CONSUMER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    consumer_address: str
    job_id: str
    auth: Authorization
    def __init__(self, consumer_address: _Optional[str] = ..., job_id: _Optional[str] = ..., auth: _Optional[_Union[Authorization, _Mapping]] = ...) -> None: ...

class StopResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("consumer_address", "page_size", "page_token", "statuses", "auth")
    CONSUMER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    consumer_address: str
    page_size: int
    page_token: str
    statuses: _containers.RepeatedScalarFieldContainer[_job_status_pb2.JobStatus]
    auth: Authorization
    def __init__(self, consumer_address: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[_job_status_pb2.JobStatus, str]]] = ..., auth: _Optional[_Union[Authorization, _Mapping]] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_job_pb2.Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[_job_pb2.Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("consumer_address", "job_id", "after_sequence", "auth")
    CONSUMER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    consumer_address: str
    job_id: str
    after_sequence: int
    auth: Authorization
    def __init__(self, consumer_address: _Optional[str] = ..., job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ..., auth: _Optional[_Union[Authorization, _Mapping]] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("event", "job")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    event: _job_pb2.JobEvent
    job: _job_pb2.Job
    def __init__(self, event: _Optional[_Union[_job_pb2.JobEvent, _Mapping]] = ..., job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("consumer_address", "job_id", "name", "kind", "offset", "auth")
    CONSUMER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    consumer_address: str
    job_id: str
    name: str
    kind: _job_pb2.ResultKind
    offset: int
    auth: Authorization
    def __init__(self, consumer_address: _Optional[str] = ..., job_id: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[_Union[_job_pb2.ResultKind, str]] = ..., offset: _Optional[int] = ..., auth: _Optional[_Union[Authorization, _Mapping]] = ...) -> None: ...

class GetResultResponse(_message.Message):
    __slots__ = ("file", "offset", "data")
    FILE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    file: _job_pb2.ResultFile
    offset: int
    data: bytes
    def __init__(self, file: _Optional[_Union[_job_pb2.ResultFile, _Mapping]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class GetLogsRequest(_message.Message):
    __slots__ = ("consumer_address", "job_id", "follow", "after_sequence", "auth")
    CONSUMER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    consumer_address: str
    job_id: str
    follow: bool
    after_sequence: int
    auth: Authorization
    def __init__(self, consumer_address: _Optional[str] = ..., job_id: _Optional[str] = ..., follow: _Optional[bool] = ..., after_sequence: _Optional[int] = ..., auth: _Optional[_Union[Authorization, _Mapping]] = ...) -> None: ...

class GetLogsResponse(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: _job_pb2.LogChunk
    def __init__(self, chunk: _Optional[_Union[_job_pb2.LogChunk, _Mapping]] = ...) -> None: ...

class GetEnvironmentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetEnvironmentsResponse(_message.Message):
    __slots__ = ("environments",)
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    environments: _containers.RepeatedCompositeFieldContainer[_job_pb2.ComputeEnvironment]
    def __init__(self, environments: _Optional[_Iterable[_Union[_job_pb2.ComputeEnvironment, _Mapping]]] = ...) -> None: ...

class PublishAssetRequest(_message.Message):
    __slots__ = ("publisher_address", "ddo", "auth")
    PUBLISHER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DDO_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    publisher_address: str
    ddo: _struct_pb2.Struct
    auth: Authorization
    def __init__(self, publisher_address: _Optional[str] = ..., ddo: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., auth: _Optional[_Union[Authorization, _Mapping]] = ...) -> None: ...

class PublishAssetResponse(_message.Message):
    __slots__ = ("did",)
    DID_FIELD_NUMBER: _ClassVar[int]
    did: str
    def __init__(self, did: _Optional[str] = ...) -> None: ...

class GetAssetRequest(_message.Message):
    __slots__ = ("did",)
    DID_FIELD_NUMBER: _ClassVar[int]
    did: str
    def __init__(self, did: _Optional[str] = ...) -> None: ...

class GetAssetResponse(_message.Message):
    __slots__ = ("ddo", "files_checksum", "container_section_checksum")
    DDO_FIELD_NUMBER: _ClassVar[int]
    FILES_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_SECTION_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    ddo: _struct_pb2.Struct
    files_checksum: str
    container_section_checksum: str
    def __init__(self, ddo: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., files_checksum: _Optional[str] = ..., container_section_checksum: _Optional[str] = ...) -> None: ...

class GetNonceRequest(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class GetNonceResponse(_message.Message):
    __slots__ = ("nonce", "provider_address", "chain_id", "next_nonce")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_NONCE_FIELD_NUMBER: _ClassVar[int]
    nonce: int
    provider_address: str
    chain_id: int
    next_nonce: int
    def __init__(self, nonce: _Optional[int] = ..., provider_address: _Optional[str] = ..., chain_id: _Optional[int] = ..., next_nonce: _Optional[int] = ...) -> None: ...

class ProviderFee(_message.Message):
    __slots__ = ("provider_fee_address", "provider_fee_token", "provider_fee_amount", "v", "r", "s", "valid_until", "provider_data")
    PROVIDER_FEE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FEE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FEE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    V_FIELD_NUMBER: _ClassVar[int]
    R_FIELD_NUMBER: _ClassVar[int]
    S_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_DATA_FIELD_NUMBER: _ClassVar[int]
    provider_fee_address: str
    provider_fee_token: str
    provider_fee_amount: str
    v: int
    r: str
    s: str
    valid_until: int
    provider_data: str
    def __init__(self, provider_fee_address: _Optional[str] = ..., provider_fee_token: _Optional[str] = ..., provider_fee_amount: _Optional[str] = ..., v: _Optional[int] = ..., r: _Optional[str] = ..., s: _Optional[str] = ..., valid_until: _Optional[int] = ..., provider_data: _Optional[str] = ...) -> None: ...

class InitializeComputeRequest(_message.Message):
    __slots__ = ("consumer_address", "dataset_did", "additional_dataset_dids", "algorithm_did", "environment_id", "auth")
    CONSUMER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    DATASET_DID_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_DATASET_DIDS_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_DID_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    consumer_address: str
    dataset_did: str
    additional_dataset_dids: _containers.RepeatedScalarFieldContainer[str]
    algorithm_did: str
    environment_id: str
    auth: Authorization
    def __init__(self, consumer_address: _Optional[str] = ..., dataset_did: _Optional[str] = ..., additional_dataset_dids: _Optional[_Iterable[str]] = ..., algorithm_did: _Optional[str] = ..., environment_id: _Optional[str] = ..., auth: _Optional[_Union[Authorization, _Mapping]] = ...) -> None: ...

class OrderQuote(_message.Message):
    __slots__ = ("did", "datatoken_address", "service_index", "service_id", "provider_fee", "validity_seconds")
    DID_FIELD_NUMBER: _ClassVar[int]
    DATATOKEN_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_INDEX_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FEE_FIELD_NUMBER: _ClassVar[int]
    VALIDITY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    did: str
    datatoken_address: str
    service_index: int
    service_id: str
    provider_fee: ProviderFee
    validity_seconds: int
    def __init__(self, did: _Optional[str] = ..., datatoken_address: _Optional[str] = ..., service_index: _Optional[int] = ..., service_id: _Optional[str] = ..., provider_fee: _Optional[_Union[ProviderFee, _Mapping]] = ..., validity_seconds: _Optional[int] = ...) -> None: ...

class InitializeComputeResponse(_message.Message):
    __slots__ = ("quotes", "chain_id")
    QUOTES_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    quotes: _containers.RepeatedCompositeFieldContainer[OrderQuote]
    chain_id: int
    def __init__(self, quotes: _Optional[_Iterable[_Union[OrderQuote, _Mapping]]] = ..., chain_id: _Optional[int] = ...) -> None: ...

class PublishResultsRequest(_message.Message):
    __slots__ = ("consumer_address", "job_id", "name", "result_names", "compute", "auth")
    CONSUMER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RESULT_NAMES_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    consumer_address: str
    job_id: str
    name: str
    result_names: _containers.RepeatedScalarFieldContainer[str]
    compute: _struct_pb2.Struct
    auth: Authorization
    def __init__(self, consumer_address: _Optional[str] = ..., job_id: _Optional[str] = ..., name: _Optional[str] = ..., result_names: _Optional[_Iterable[str]] = ..., compute: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., auth: _Optional[_Union[Authorization, _Mapping]] = ...) -> None: ...

class PublishResultsResponse(_message.Message):
    __slots__ = ("did",)
    DID_FIELD_NUMBER: _ClassVar[int]
    did: str
    def __init__(self, did: _Optional[str] = ...) -> None: ...
