"""Request and response bodies (pydantic), kept apart from the ORM models.

Inputs are strict: unknown fields are rejected, sizes are non-negative int64, strings are
bounded and free of NUL / lone surrogates (PostgreSQL rejects both), free-form JSON is bounded
in depth and size, timestamps carry a timezone and are not in the far future.

Longer than most modules on purpose: it is the API contract, every body in one place beside
API.md, so a reviewer checks one file against the other.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import saveos_rules as rules
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    create_model,
    field_validator,
    model_validator,
)
from saveos_agent.job_params import SCHEMAS as JOB_KINDS

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
MAX_FUTURE = timedelta(days=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REPORT_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
JSON_MAX_DEPTH = 8
JSON_MAX_ITEMS = 2000
JSON_MAX_STR = 8192
REPORT_TEXT_MAX = 65536


def _clean_str(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def _check_timestamp(value: datetime) -> datetime:
    try:
        value = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("timestamp out of range") from None
    if value < EPOCH:
        raise ValueError("timestamp before 1970")
    if value > datetime.now(UTC) + MAX_FUTURE:
        raise ValueError("timestamp is more than a day in the future")
    return value


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("timestamp out of range") from None


def _check_json(value: Any) -> Any:
    budget = [JSON_MAX_ITEMS]

    def walk(node: Any, depth: int) -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError(f"too many items (max {JSON_MAX_ITEMS})")
        if depth > JSON_MAX_DEPTH:
            raise ValueError(f"nested deeper than {JSON_MAX_DEPTH} levels")
        if isinstance(node, dict):
            for key, item in node.items():
                if len(key) > 200:
                    raise ValueError("key longer than 200 characters")
                _clean_str(key)
                walk(item, depth + 1)
        elif isinstance(node, list):
            for item in node:
                walk(item, depth + 1)
        elif isinstance(node, str):
            if len(node) > JSON_MAX_STR:
                raise ValueError(f"string longer than {JSON_MAX_STR} characters")
            _clean_str(node)
        elif isinstance(node, bool) or node is None:
            pass
        elif isinstance(node, int):
            if not -INT64_MAX - 1 <= node <= INT64_MAX:
                raise ValueError("integer out of 64-bit range")
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise ValueError("numbers must be finite")
        else:
            raise ValueError("unsupported value")

    walk(value, 0)
    return value


def Text(max_length: int, min_length: int = 0) -> Any:  # noqa: N802 - reads like a type
    return Annotated[
        str, Field(min_length=min_length, max_length=max_length), AfterValidator(_clean_str)
    ]


def _iso_only(value: Any) -> Any:
    """The spec says ISO 8601 date-time; pydantic would also read numbers as Unix times."""
    if isinstance(value, bool | int | float):
        raise ValueError("must be an ISO 8601 date-time string, not a number")
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return value
        raise ValueError("must be an ISO 8601 date-time string, not a number")
    return value


Instant = Annotated[AwareDatetime, BeforeValidator(_iso_only), AfterValidator(_to_utc)]
Version = Text(64)
ShortText = Text(200)
HostText = Text(253)
RepoPath = Text(1024, 1)
ArchiveName = Text(255)
Message = Text(65536)
WarningText = Text(4096)
LabelKey = Text(63, 1)
Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_only), AfterValidator(_check_timestamp)]
# Strict: JSON `true`, "5" or 5.5 are not integers (the spec says integer; lax mode took them).
Size = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
# Strict: JSON `true` is not 1.0 (schemathesis sent one); ints are still taken.
Duration = Annotated[StrictFloat, Field(ge=0, le=1e9, allow_inf_nan=False)]
Id = Annotated[StrictInt, Field(ge=1, le=INT64_MAX)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_check_json)]
# The host name rule (saveos_rules), also for the routes' path and query parameters.
NAME_PATTERN = rules.NAME_PATTERN
AgentName = Annotated[str, Field(pattern=NAME_PATTERN)]
ReportId = Annotated[str, Field(pattern=REPORT_ID_PATTERN)]
# Bounded so that date arithmetic never overflows.
Interval = Annotated[StrictInt, Field(ge=1, le=rules.INTERVAL_MAX_S)]
BackupInterval = Annotated[
    StrictInt, Field(ge=rules.BACKUP_INTERVAL_MIN_S, le=rules.INTERVAL_MAX_S)
]
HeartbeatInterval = Annotated[
    StrictInt, Field(ge=rules.HEARTBEAT_INTERVAL_MIN_S, le=rules.INTERVAL_MAX_S)
]
Grace = Annotated[StrictInt, Field(ge=0, le=rules.INTERVAL_MAX_S)]
# A verification interval (check, drill, escrow proof); 0: none expected.
VerifyInterval = Annotated[StrictInt, Field(ge=0, le=rules.INTERVAL_MAX_S)]
# The verification schedule an agent is provisioned with (the role's saveos_agent_* variables).
VERIFY_FIELDS = (
    "check_interval_s",
    "check_grace_s",
    "drill_interval_s",
    "drill_grace_s",
    "escrow_interval_s",
    "escrow_grace_s",
)
ReturnCode = Annotated[StrictInt, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
Labels = Annotated[
    dict[LabelKey, HostText],
    Field(max_length=64),
]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _before_glossary(new: str) -> Any:
    """A key kept under its name from before docs/GLOSSARY.md (#18): the value of `new`,
    marked deprecated in the OpenAPI schema until it goes (docs/GLOSSARY.md says when)."""
    return Field(None, validation_alias=new, deprecated=f"the same as {new}")


# ---- admin ----


class ProvisionIn(Input):
    name: AgentName
    labels: Labels | None = None
    backup_interval_s: BackupInterval | None = None
    backup_grace_s: Grace | None = None
    heartbeat_interval_s: HeartbeatInterval | None = None
    check_interval_s: VerifyInterval | None = None
    check_grace_s: Grace | None = None
    drill_interval_s: VerifyInterval | None = None
    drill_grace_s: Grace | None = None
    escrow_interval_s: VerifyInterval | None = None
    escrow_grace_s: Grace | None = None
    rotate: StrictBool = False


class ProvisionOut(Output):
    id: int
    name: str
    created: bool
    token: str | None


class ProvisionBatchIn(Input):
    agents: Annotated[list[ProvisionIn], Field(min_length=1, max_length=1000)]

    @field_validator("agents")
    @classmethod
    def _names_once(cls, agents: list[ProvisionIn]) -> list[ProvisionIn]:
        names = [a.name for a in agents]
        if len(set(names)) != len(names):
            raise ValueError("each agent name may appear only once in a batch")
        return agents


class ProvisionBatchOut(Output):
    agents: list[ProvisionOut]


def _with_deprecated_keys(model: type[Output]) -> Any:
    """`model` with, after its own fields, the deprecated key (saveos_rules.DEPRECATED_KEYS) of
    each field that has one and that it does not declare itself, of the same type."""
    old_keys = {
        old: (model.model_fields[new].annotation, _before_glossary(new))
        for old, new in rules.DEPRECATED_KEYS.items()
        if new in model.model_fields and old not in model.model_fields
    }
    name = model.__name__.lstrip("_")
    return create_model(
        name, __base__=model, __doc__=model.__doc__, __module__=__name__, **old_keys
    )


class _RepositoryLocation(Output):
    """Where the agent's repository lives (null server: on the host itself), as its newest
    snapshot report said: in an Agent and a fleet status row."""

    repository_server: str | None = None
    repository_path: str | None = None
    repository_quota_bytes: int | None = None
    repository_used_bytes: int | None = None


RepositoryLocation = _with_deprecated_keys(_RepositoryLocation)


class _AgentOut(RepositoryLocation):
    id: int
    name: str
    labels: dict[str, str]
    agent_version: str | None
    borg_version: str | None
    os: str | None
    backup_interval_s: int
    backup_grace_s: int
    heartbeat_interval_s: int
    created_at: datetime
    last_heartbeat: datetime | None = Field(validation_alias="last_heartbeat_at")
    last_seen: datetime | None = Field(
        validation_alias="last_heartbeat_at", deprecated="the same as last_heartbeat"
    )
    decommissioned_at: datetime | None
    offsite_interval_s: int | None = None
    offsite_server: str | None = None
    provisioned_backup_interval_s: int | None = None
    provisioned_heartbeat_interval_s: int | None = None
    declared_backup_interval_s: int | None = None
    declared_heartbeat_interval_s: int | None = None

    tampered_at: datetime | None = None
    check_interval_s: int | None = None
    check_grace_s: int | None = None
    drill_interval_s: int | None = None
    drill_grace_s: int | None = None
    escrow_interval_s: int | None = None
    escrow_grace_s: int | None = None
    repository_reported_at: datetime | None = None  # of the location's report


AgentOut = _with_deprecated_keys(_AgentOut)


class AgentList(Output):
    agents: list[AgentOut]
    total: int  # every agent, whatever page `agents` is


class DatabaseDumpOut(Output):
    name: str
    type: str
    format: str | None = None
    size: int
    status: str
    message: str | None = None


class SnapshotOut(Output):
    id: int
    agent_id: int
    report_id: str
    job_id: int | None
    repository: str
    repo: str = Field(validation_alias="repository", deprecated="the same as repository")
    archive: str
    started_at: datetime
    finished_at: datetime
    duration_s: float | None
    nfiles: int
    original_size: int
    compressed_size: int
    deduplicated_size: int
    exit_status: str
    locked: bool = False
    rc: int
    warnings: list[str]
    message: str | None
    pruned_at: datetime | None = None
    # The database dumps the archive holds (null: none declared, or an older agent).
    databases: list[DatabaseDumpOut] | None = None


class SnapshotPage(Output):
    snapshots: list[SnapshotOut]
    total: int


class RevokeOut(Output):
    revoked: int


class DecommissionOut(Output):
    id: int
    decommissioned_at: datetime


# One allow-listed parameter schema per kind: saveos_agent/job_params.py (API and agent).
JobKind = Literal[tuple(JOB_KINDS)]  # type: ignore[valid-type]
JobState = Literal[rules.JOB_STATES]


class JobsIn(Input):
    kind: JobKind
    agents: list[Id | AgentName] = Field(min_length=1, max_length=10000)
    params: JsonObject | None = None
    requested_by: ShortText | None = None


class JobOut(Output):
    id: int
    agent_id: int
    kind: str
    state: str
    params: dict[str, Any]
    requested_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None


class JobsOut(Output):
    jobs: list[JobOut]


class _AgentStatusOut(RepositoryLocation):
    id: int
    name: str
    status: Literal[rules.STATUSES]
    last_heartbeat: datetime | None
    last_backup_at: datetime | None
    last_archive: str | None
    original_size: int | None
    deduplicated_size: int | None
    # Declared, not added by _with_deprecated_keys: required and not marked in the schema.
    last_snapshot_status: str | None = Field(
        description="Deprecated: the same value as last_backup_result, kept for old readers."
    )
    last_check_at: datetime | None
    last_check_result: str | None
    last_drill_at: datetime | None
    last_drill_result: str | None
    backup_interval_s: int
    backup_grace_s: int
    heartbeat_interval_s: int
    last_offsite_at: datetime | None = None
    last_offsite_result: str | None = None
    offsite_interval_s: int | None = None
    last_escrow_at: datetime | None = None
    last_escrow_result: str | None = None
    # Seconds from that instant to generated_at, to a tenth (what `saveos status` shows).
    last_heartbeat_age_s: float | None = None
    last_backup_age_s: float | None = None
    last_offsite_age_s: float | None = None
    # The agent declared an interval other than the provisioned one (which holds, unless the
    # declared one is stricter): see GET /agents/{id} for both.
    schedule_mismatch: bool = False

    tampered_at: datetime | None = None
    # Why the status is what it is: the first finding explained with its instant ("overdue:
    # last good backup 2 d ago", "silent since 10:02"), what the dashboard shows; then every
    # finding, worst first ("stale drill", "running: backup since 10:02").
    reason: str = ""
    reasons: list[str] = []
    running: list[RunningWork] = []
    check_interval_s: int | None = None
    drill_interval_s: int | None = None
    escrow_interval_s: int | None = None
    # The latest snapshot's exit_status (ok / warning / error), the glossary's name for it.
    last_backup_result: str | None = None


AgentStatusOut = _with_deprecated_keys(_AgentStatusOut)


class FleetTotals(Output):
    agents: int
    by_status: dict[str, int]
    original_size: int
    deduplicated_size: int


class FleetStatusOut(Output):
    generated_at: datetime
    agents: list[AgentStatusOut]
    totals: FleetTotals


# ---- agent ----


class RunningWork(BaseModel):
    """One action running on the host while it heartbeats (a backup that takes hours)."""

    model_config = ConfigDict(extra="forbid")
    kind: Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")]
    job_id: Id | None = None
    started_at: Timestamp


class HeartbeatIn(Input):
    agent_version: Version | None = None
    borg_version: Version | None = None
    os: ShortText | None = None
    hostname: HostText | None = None
    backup_interval_s: BackupInterval | None = None
    heartbeat_interval_s: HeartbeatInterval | None = None
    offsite_interval_s: Interval | None = None
    facts: JsonObject | None = None
    # What runs on the host now; kept with the agent's facts (facts.running), which every
    # heartbeat overwrites, so an empty list clears it.
    running: Annotated[list[RunningWork], Field(max_length=16)] | None = None

    @model_validator(mode="after")
    def _fold_running(self) -> HeartbeatIn:
        if self.running is not None:
            work = [w.model_dump(mode="json") for w in self.running]
            self.facts = {**(self.facts or {}), "running": work}
        return self


class HeartbeatJob(Output):
    id: int
    kind: str
    params: dict[str, Any]


class HeartbeatOut(Output):
    agent_id: int
    server_time: datetime
    jobs: list[HeartbeatJob]


class _Timed(Input):
    report_id: ReportId
    started_at: Timestamp
    finished_at: Timestamp
    job_id: Id | None = None

    @model_validator(mode="after")
    def _ordered(self):
        if self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        return self


# A database as the agent names it (letters, digits, _ . -; `globals` of a PostgreSQL `all`).
DatabaseName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}$")]
DatabaseType = Literal["postgresql", "mariadb", "mysql", "sqlite"]


class DatabaseDump(Input):
    name: DatabaseName
    type: DatabaseType
    format: Literal["custom", "plain", "tar", "sql"] | None = None
    size: Size
    status: Literal["ok", "error"]
    message: Text(4096) | None = None  # type: ignore[valid-type]


class DatabaseDrill(Input):
    name: DatabaseName
    type: DatabaseType
    result: Literal["pass", "fail"]
    message: Text(4096) | None = None  # type: ignore[valid-type]


class RepositoryName(Input):
    """The repository as borg names it (a check report's `repository`)."""

    url: RepoPath


class RepositoryReport(Input):
    """Where the repository lives: its server (null: the host's own disk), the path there,
    the host's storage quota on it and the bytes the repository's archives use."""

    # The repository as borg names it: `repo` of older agents (GLOSSARY "Deprecated names").
    url: RepoPath | None = None
    server: AgentName | None = None
    path: RepoPath
    quota_bytes: Size | None = None
    used_bytes: Size | None = None


class _InRepository(_Timed):
    """A report about one repository: named by `repository.url` (each kind declares its
    `repository`), or by the deprecated `repo` of older agents for one release (GLOSSARY
    "Deprecated names"); both given, they must be the same (else 422)."""

    # Deprecated: repository.url. Marked in the schema only (`deprecated=` would warn on use).
    repo: RepoPath | None = Field(None, json_schema_extra={"deprecated": True})

    @model_validator(mode="after")
    def _one_repository(self):
        url = self.repository.url if self.repository else None
        if url is None and self.repo is None:
            raise ValueError("repository.url is required (or, from older agents, repo)")
        if url is not None and self.repo is not None and url != self.repo:
            raise ValueError(
                "repo and repository.url name different repositories: send repository.url"
                " alone (repo is its deprecated name)"
            )
        return self

    @property
    def repository_url(self) -> str:
        """The repository the report is about, whichever key named it (both: the same)."""
        return self.repository.url if self.repository and self.repository.url else self.repo


class SnapshotReport(_InRepository):
    archive: ArchiveName
    duration_s: Duration | None = None
    nfiles: Size
    original_size: Size
    compressed_size: Size
    deduplicated_size: Size
    exit_status: Literal[rules.SNAPSHOT_RESULTS]
    # The backup failed because the repository stayed locked (status `locked`, not `failing`).
    locked: StrictBool = False
    rc: ReturnCode
    warnings: Annotated[list[WarningText], Field(max_length=200)] | None = None
    message: Message | None = None
    databases: Annotated[list[DatabaseDump], Field(max_length=1000)] | None = None
    repository: RepositoryReport | None = None

    @model_validator(mode="after")
    def _bounded_text(self):
        # Each field is bounded; together too, or one report could store 800 KB of warnings.
        total = len(self.message or "") + sum(len(w) for w in self.warnings or ())
        if total > REPORT_TEXT_MAX:
            raise ValueError(f"message and warnings hold more than {REPORT_TEXT_MAX} characters")
        return self


class CheckReport(_InRepository):
    repository: RepositoryName | None = None
    verify_data: StrictBool
    result: Literal[rules.CHECK_RESULTS]
    rc: ReturnCode
    message: Message | None = None


class DrillReport(_Timed):
    archive: ArchiveName
    files_checked: Size
    files_matched: Size
    files_mismatched: Size
    result: Literal[rules.DRILL_RESULTS]
    message: Message | None = None
    databases: Annotated[list[DatabaseDrill], Field(max_length=1000)] | None = None


class OffsiteReport(_Timed):
    target: Text(1024) | None = None  # type: ignore[valid-type]
    duration_s: Duration | None = None
    objects: Size = 0
    objects_uploaded: Size = 0
    bytes_uploaded: Size = 0
    objects_deleted: Size = 0
    result: Literal[rules.OFFSITE_RESULTS]
    message: Text(65536) | None = None  # type: ignore[valid-type]


class ServerOffsiteReport(OffsiteReport):
    """An offsite copy of the agent's repository made by its repository server (reported by
    the controller, after the central run verified the repository)."""

    server: AgentName
    # How often the copy is due (the central run's schedule): the agent is late past it.
    interval_s: Interval | None = None


class EscrowProofIn(Input):
    started_at: Timestamp
    finished_at: Timestamp
    method: Literal["live", "offsite"]
    result: Literal[rules.ESCROW_RESULTS]
    archives: Size | None = None
    message: Text(65536) | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _ordered(self):
        if self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        return self


class EscrowProofOut(Output):
    id: int
    agent_id: int
    started_at: datetime
    finished_at: datetime
    duration_s: float | None
    method: str
    result: str
    archives: int | None
    message: str | None


class JobProgressIn(Input):
    """How far a running job got (borg create's progress): shown while it runs."""

    nfiles: Size
    original_size: Size
    compressed_size: Size = 0
    deduplicated_size: Size = 0
    path: Text(1000) | None = None  # type: ignore[valid-type]


class JobProgressOut(Output):
    updated: bool


class JobResultIn(Input):
    report_id: ReportId
    state: Literal["succeeded", "failed"]
    result: JsonObject = Field(default_factory=dict)


class ReportAck(Output):
    id: int
    duplicate: bool


class HealthOut(Output):
    status: str
    database: str


class LiveOut(Output):
    status: Literal["ok"]


# ---- operators' tokens and the audit log ----

Scope = Literal["read", "operate", "admin"]
TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,99}$"  # noqa: S105


class ApiTokenIn(Input):
    name: Annotated[str, Field(pattern=TOKEN_NAME_PATTERN)]
    scope: Scope
    # None: does not expire. At most ten years.
    expires_in_s: Annotated[StrictInt, Field(ge=60, le=3660 * 86400)] | None = None


class ApiTokenOut(Output):
    id: int
    name: str
    scope: str
    created_at: datetime
    created_by: int | None
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiTokenCreated(ApiTokenOut):
    token: str | None = None


class ApiTokenList(Output):
    tokens: list[ApiTokenOut]


class AuditEventOut(Output):
    id: int
    at: datetime
    token_id: int | None
    actor: str
    action: str
    target: str | None
    client: str | None
    detail: dict[str, Any] | None


class AuditPage(Output):
    events: list[AuditEventOut]


# ---- central retention (saveos prune / saveos repo rollback) ----


class MaintenanceFinding(Input):
    kind: Text(32, 1)  # type: ignore[valid-type]
    message: Message  # type: ignore[valid-type]
    items: Annotated[list[StrictInt | ArchiveName], Field(max_length=100_000)] = []  # type: ignore[valid-type]


SegmentNumber = Annotated[str, Field(pattern=r"^[0-9]{1,18}$")]
# [size, mtime_ns, inode, sha256 or null] of one segment file
SegmentPrint = Annotated[
    list[Annotated[StrictInt, Field(ge=0, le=2**63 - 1)] | Text(64) | None],  # type: ignore[valid-type]
    Field(min_length=4, max_length=4),
]


class RepoStateIn(Input):
    """saveos_cli/retention/verify.RepoState: what a good run leaves the repository as."""

    transaction: Size | None
    archives: Annotated[dict[ArchiveName, Text(64)], Field(max_length=1_000_000)]  # type: ignore[valid-type]
    segments: Annotated[dict[SegmentNumber, SegmentPrint], Field(max_length=10_000_000)]
    log_sha256: Text(64)  # type: ignore[valid-type]
    finished_at: Text(64) | None = None  # type: ignore[valid-type]
    key_sha256: Text(64) | None = None  # type: ignore[valid-type]


class MaintenanceIn(Input):
    kind: Literal[rules.MAINTENANCE_KINDS]
    result: Literal[rules.MAINTENANCE_RESULTS]
    started_at: Timestamp
    finished_at: Timestamp
    verify_data: StrictBool = False
    transaction: Size | None = None
    archives: Size | None = None
    pruned: Annotated[list[ArchiveName], Field(max_length=100_000)] = []  # type: ignore[valid-type]
    findings: Annotated[list[MaintenanceFinding], Field(max_length=32)] = []
    # What the next central run holds the repository to; only a run that left it good has one.
    state: RepoStateIn | None = None
    message: Message | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _ordered(self):
        if self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        if self.result == "tampered" and not self.findings:
            raise ValueError("a tampered result names its findings")
        if self.state is not None and self.result != "ok":
            raise ValueError("only an ok run records a state")
        return self


class MaintenanceOut(Output):
    id: int
    agent_id: int
    kind: str
    result: str
    started_at: datetime
    finished_at: datetime
    duration_s: float | None
    verify_data: bool
    transaction_id: int | None
    archives: int | None
    pruned: list[str]
    findings: list[dict[str, Any]]
    message: str | None


class MaintenanceState(Output):
    """What the next central run needs: the last good state, and the archives on record."""

    agent_id: int
    tampered_at: datetime | None
    last_maintained_at: datetime | None
    last_verify_data_at: datetime | None = None  # the last ok run with borg check --verify-data
    state: dict[str, Any] | None
    # name -> finished_at of every archive reported made and not pruned by a central run
    archives_on_record: dict[str, datetime]
