"""The REST API's request bodies and answers (pydantic), which its OpenAPI document describes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fermion.platform.store.records import MAX_REACH, NAME_RULE

# Bodies


class DeploymentCreate(BaseModel):
    """A new deployment: what to run and how many replicas."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        description="Lowercase letters, digits and '-', starting with a letter; at most 63 characters.",
        json_schema_extra={"pattern": NAME_RULE.pattern},  # documented; check_name explains a mismatch
    )
    source: str = Field(description="What `fermion serve` takes: app.py:MyService, st:..., hf:..., sklearn:..., onnx:...")
    options: dict[str, Any] = Field(default_factory=dict, description='Source options, e.g. {"task": "fill-mask"}.')
    env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables for the replicas (secrets: never shown)."
    )
    min_replicas: int = Field(1, ge=0, description="0 lets an idle deployment scale to zero.")
    max_replicas: int | None = Field(None, ge=1, description="Defaults to min_replicas (or 1).")
    target_in_flight: float = Field(2.0, gt=0, description="Requests in flight per replica the autoscaler aims for.")
    public: bool = Field(False, description="Callable through the gateway without a token.")
    note: str | None = Field(None, max_length=500, description="Why, kept with revision 1.")


class DeploymentPatch(BaseModel):
    """Changes to a deployment; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")
    source: str | None = None
    options: dict[str, Any] | None = None
    env: dict[str, str] | None = None
    min_replicas: int | None = Field(None, ge=0)
    max_replicas: int | None = Field(None, ge=1)
    target_in_flight: float | None = Field(None, gt=0)
    public: bool | None = None
    note: str | None = Field(None, max_length=500)


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    revision: int | None = Field(
        None, ge=1, le=2**31 - 1, description="The revision to go back to; default: the one before the current."
    )


#: 100 years: a longer lifetime is "never" (and past what a datetime holds).
MAX_TOKEN_LIFETIME_S = 100 * 365 * 86400


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        description="A name to tell it apart, e.g. 'ci' or 'alice-laptop'.",
        json_schema_extra={"pattern": NAME_RULE.pattern},  # documented; check_name explains a mismatch
    )
    scopes: list[str] | str = Field(default_factory=lambda: ["invoke"], description="admin, deploy and/or invoke.")
    expires_in_s: float | None = Field(
        None, gt=0, le=MAX_TOKEN_LIFETIME_S, description="Seconds until it stops working (at most 100 years); default: never."
    )
    deployments: list[str] = Field(
        default_factory=list,
        max_length=MAX_REACH,
        description="Narrow it to these deployments (invoke or deploy tokens): it reaches no other. Default: every deployment.",
    )
    rate: str | None = Field(
        None,
        max_length=32,
        description="At most this many calls through the gateway per second, minute or hour, e.g. '10/s', '600/min'; "
        "more get 429 with Retry-After. Default: no limit.",
    )


# Answers (documented in OpenAPI)


class ReplicaCounts(BaseModel):
    desired: int
    ready: int
    starting: int


class DeploymentView(BaseModel):
    name: str
    source: str
    options: dict[str, Any]
    env: dict[str, str] = Field(description="Names only; every value shows as ***.")
    min_replicas: int
    max_replicas: int
    target_in_flight: float
    public: bool
    revision: int
    state: str
    created_at: str
    updated_at: str
    url: str = Field(description="Where the gateway serves it.")
    status: str = Field(description="ready, starting, degraded, idle, failing or deleting.")
    replicas: ReplicaCounts
    restarts: int = Field(0, description="Replicas replaced after crashing or hanging since the control plane started.")


class DeploymentList(BaseModel):
    deployments: list[DeploymentView]


class RevisionView(BaseModel):
    number: int
    source: str
    options: dict[str, Any]
    env: dict[str, str]
    created_at: str
    note: str | None
    forgotten: list[str] = Field(
        default_factory=list, description="Env names whose values were forgotten since: this revision cannot be rolled back to."
    )


class ForgottenEnv(BaseModel):
    forgotten: int = Field(description="How many env values were erased.")
    revisions: list[int] = Field(description="The revisions that can no longer be rolled back to because of it.")


class ReplicaView(BaseModel):
    id: str
    revision: int
    state: str
    url: str | None
    pid: int | None
    detail: str
    started_at: str | None = Field(None, description="When the replica's process started (ISO 8601), for uptime.")


class EventView(BaseModel):
    id: int
    deployment: str | None
    kind: str
    message: str
    created_at: str


class LogLine(BaseModel):
    replica: str
    line: str


class TokenView(BaseModel):
    id: int
    name: str
    prefix: str
    scopes: list[str]
    deployments: list[str] = Field(description="The deployments it is narrowed to; empty: every deployment.")
    rate: str | None = Field(description="Its calls through the gateway per period, e.g. '10/s'; null: no limit.")
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None


class NewToken(TokenView):
    token: str = Field(description="The token itself: shown this once, stored only as a hash.")


class AuditView(BaseModel):
    id: int
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    created_at: str


class Info(BaseModel):
    version: str
    backend: str
    database: str | None  # admin tokens only: its URL names a host or the data directory
    url: str
    deployments: int
    sandbox: str = Field(description='How replicas are kept from the platform: "bubblewrap", or "none: <why>".')


class WhoAmI(BaseModel):
    name: str
    scopes: list[str]
    expires_at: str | None
    deployments: list[str] = Field(description="The deployments it is narrowed to; empty: every deployment.")
    rate: str | None = Field(description="Its calls through the gateway per period, e.g. '10/s'; null: no limit.")


class MetricsPoint(BaseModel):
    t: str = Field(description="When the sample was taken (ISO 8601); the rates cover the interval before it.")
    rps: float
    errors_per_s: float = Field(description="5xx answers per second.")
    p50_ms: float | None = Field(description="null in an interval without requests.")
    p95_ms: float | None
    p99_ms: float | None
    in_flight: int
    ready: int
    desired: int


class DeploymentMetrics(BaseModel):
    interval_s: int | float = Field(description="Seconds between samples.")
    points: list[MetricsPoint] = Field(description="Oldest first.")


class MetricsSummary(BaseModel):
    rps: float
    p99_ms: float | None
    errors_per_s: float


class MetricsOverview(BaseModel):
    deployments: dict[str, MetricsSummary]


class ErrorBody(BaseModel):
    error: str
    status: int
    message: str
