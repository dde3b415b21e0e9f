"""Settings: explicit argument > ``LONGRUN_*`` environment variable > default.

This is the only module that reads ``os.environ``. A malformed value raises
:class:`~longrun.errors.LongrunConfigError` naming the variable and the value, at decoration
time (the decorator resolves once to validate) and again at the start of every invocation, so
a test can change a threshold with ``monkeypatch.setenv`` after the handler was decorated.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from .errors import LongrunConfigError
from .record import Record

if TYPE_CHECKING:
    from .stores.base import CheckpointStore

__all__ = [
    "ENV_CHECKPOINT_EVERY_S",
    "ENV_CHECKPOINT_URI",
    "ENV_LOCAL_CHECKPOINT_URI",
    "ENV_TENANT_ID",
    "ENV_DISABLED",
    "ENV_MARGIN_MS",
    "ENV_MAX_HOPS",
    "ENV_MAX_RUN_SECONDS",
    "ENV_MIN_MARGIN_MS",
    "Settings",
    "env_store",
    "resolve",
    "store_from_uri",
]

ENV_CHECKPOINT_URI = "LONGRUN_CHECKPOINT_URI"
ENV_LOCAL_CHECKPOINT_URI = "LONGRUN_LOCAL_CHECKPOINT_URI"
"""Set by the local emulator (``longrun local``): the store every handler checkpoints to,
over the decorator's own ``checkpoint=`` (a production ``S3Store("my-bucket")`` included)."""
ENV_MAX_HOPS = "LONGRUN_MAX_HOPS"
ENV_MARGIN_MS = "LONGRUN_MARGIN_MS"
ENV_MIN_MARGIN_MS = "LONGRUN_MIN_MARGIN_MS"
ENV_CHECKPOINT_EVERY_S = "LONGRUN_CHECKPOINT_EVERY_S"
ENV_MAX_RUN_SECONDS = "LONGRUN_MAX_RUN_SECONDS"
ENV_DISABLED = "LONGRUN_DISABLED"
ENV_FARGATE_CLUSTER = "LONGRUN_FARGATE_CLUSTER"
ENV_FARGATE_TASK_DEFINITION = "LONGRUN_FARGATE_TASK_DEFINITION"
ENV_FARGATE_CONTAINER = "LONGRUN_FARGATE_CONTAINER"
ENV_FARGATE_SUBNETS = "LONGRUN_FARGATE_SUBNETS"
ENV_FARGATE_SECURITY_GROUPS = "LONGRUN_FARGATE_SECURITY_GROUPS"
ENV_FARGATE_ASSIGN_PUBLIC_IP = "LONGRUN_FARGATE_ASSIGN_PUBLIC_IP"
ENV_FARGATE_SPOT = "LONGRUN_FARGATE_SPOT"
ENV_FARGATE_PLATFORM_VERSION = "LONGRUN_FARGATE_PLATFORM_VERSION"
ENV_FARGATE_MAX_S = "LONGRUN_FARGATE_MAX_S"
ENV_FARGATE_LEASE_S = "LONGRUN_FARGATE_LEASE_S"
ENV_FARGATE_STOP_S = "LONGRUN_FARGATE_STOP_S"
ENV_FARGATE_HANDLER = "LONGRUN_FARGATE_HANDLER"
ENV_FARGATE_FUNCTION_NAME = "LONGRUN_FARGATE_FUNCTION_NAME"
ENV_SAFETY_NET_FUNCTION = "LONGRUN_SAFETY_NET_FUNCTION"
# Set by longrun in the RunTask overrides; read by the container runner.
ENV_RUN_ID = "LONGRUN_RUN_ID"
ENV_TENANT_ID = "LONGRUN_TENANT_ID"
"""Set in a Fargate task's overrides for a run of a tenant-isolated function: the runner's
context reports it as ``tenant_id``, so the task's hand-offs carry it too."""
ENV_HOP = "LONGRUN_HOP"
ENV_HANDLER = "LONGRUN_HANDLER"
ENV_FUNCTION_NAME = "LONGRUN_FUNCTION_NAME"
ENV_EVENT_URI = "LONGRUN_EVENT_URI"

DEFAULT_MAX_HOPS = 10
DEFAULT_MIN_MARGIN_MS = 2000
DEFAULT_CHECKPOINT_EVERY_S = 60.0
DEFAULT_MAX_RUN_SECONDS = 86400.0
DEFAULT_FARGATE_MAX_S = 86400.0
DEFAULT_FARGATE_LEASE_S = 600.0
DEFAULT_FARGATE_STOP_S = 20.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class Settings(Record):
    """The resolved settings of one decorated handler for one invocation."""

    store: CheckpointStore | None
    max_hops: int
    margin_ms: int | None
    """A fixed margin; ``None`` means adaptive."""
    min_margin_ms: int
    checkpoint_every_s: float
    max_run_seconds: float | None
    """``None`` means no wall-time limit."""
    disabled: bool
    escalate: FargateSettings | None = None
    """Where a run goes when Lambda hops cannot carry it on (``None``: nowhere, it fails)."""
    min_margin_default: bool = True
    """``min_margin_ms`` was not set: the floor scales down with short function timeouts."""


@dataclass
class Fargate:
    """Where to escalate a run: an ECS Fargate task definition and its networking.

    Every field left ``None`` comes from its ``LONGRUN_FARGATE_*`` variable
    (``cluster``: ``LONGRUN_FARGATE_CLUSTER``, ``subnets``: ``LONGRUN_FARGATE_SUBNETS`` as a
    comma-separated list, ...). ``spot=True`` uses the FARGATE_SPOT capacity provider and
    falls back to on-demand FARGATE when Spot has no capacity. ``handler`` (image mode) or
    ``function_name`` (function mode) tell the container what to run when its image does not
    set ``LONGRUN_HANDLER`` itself. ``client``/``session`` inject the ECS client.
    """

    cluster: str | None = None
    task_definition: str | None = None
    container: str | None = None
    subnets: Sequence[str] | None = None
    security_groups: Sequence[str] | None = None
    assign_public_ip: bool | None = None
    spot: bool | None = None
    platform_version: str | None = None
    handler: str | None = None
    function_name: str | None = None
    client: Any = field(default=None, repr=False)
    session: Any = field(default=None, repr=False)


class FargateSettings(Record):
    """Resolved settings of the Fargate escalation target."""

    cluster: str
    task_definition: str
    container: str
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]
    assign_public_ip: bool
    spot: bool
    platform_version: str | None
    handler: str | None
    """``LONGRUN_HANDLER`` for the container (image mode), when the image does not set it."""
    function_name: str | None
    """``LONGRUN_FUNCTION_NAME`` for the container (function mode)."""
    client: Any = None
    session: Any = None


def _int(name: str, raw: Any, *, minimum: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise LongrunConfigError(f"{name}={raw!r} is not a whole number; give e.g. {name}=10.")
    try:
        value = int(raw)
    except ValueError:
        raise LongrunConfigError(
            f"{name}={raw!r} is not a whole number; give e.g. {name}=10."
        ) from None
    if value < minimum:
        raise LongrunConfigError(f"{name}={raw!r} is below {minimum}; give a value >= {minimum}.")
    return value


def _seconds(name: str, raw: Any, *, allow_none: bool = False) -> float | None:
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in {"none", "off"}):
        if allow_none:
            return None
        raise LongrunConfigError(f"{name}={raw!r}: a number of seconds is required here.")
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise LongrunConfigError(f"{name}={raw!r} is not a number of seconds; give e.g. 60.")
    try:
        value = float(raw)
    except ValueError:
        raise LongrunConfigError(
            f"{name}={raw!r} is not a number of seconds; give e.g. {name}=60."
        ) from None
    if allow_none and value == math.inf:
        return None
    if not math.isfinite(value) or value <= 0:
        raise LongrunConfigError(f"{name}={raw!r} must be a positive, finite number of seconds.")
    return value


def _bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise LongrunConfigError(
        f"{name}={raw!r} is not a boolean; use 1/true/yes/on or 0/false/no/off."
    )


_store_cache: dict[str, CheckpointStore] = {}
_store_cache_lock = threading.Lock()


def store_from_uri(uri: str, *, name: str = ENV_CHECKPOINT_URI) -> CheckpointStore:
    """Build (once per URI, reused on warm invocations) the store ``s3://b/p/`` or ``file:///d``."""
    with _store_cache_lock:
        cached = _store_cache.get(uri)
        if cached is not None:
            return cached
        parsed = urlparse(uri)
        store: CheckpointStore
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise LongrunConfigError(
                    f"{name}={uri!r} names no bucket; use s3://BUCKET/PREFIX/."
                )
            from .stores.s3 import S3Store

            store = S3Store(parsed.netloc, prefix=parsed.path.lstrip("/"))
        elif parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
                raise LongrunConfigError(
                    f"{name}={uri!r} is not an absolute file URI; use file:///mnt/efs/longrun."
                )
            from .stores.file import FileStore

            store = FileStore(unquote(parsed.path))
        else:
            raise LongrunConfigError(
                f"{name}={uri!r} has an unknown scheme; use s3://BUCKET/PREFIX/ or file:///PATH."
            )
        _store_cache[uri] = store
        return store


def env_store(env: Mapping[str, str] | None = None) -> CheckpointStore:
    """The store named by ``LONGRUN_CHECKPOINT_URI`` (LongrunConfigError if unset)."""
    env = os.environ if env is None else env
    uri = env.get(ENV_CHECKPOINT_URI)
    if not uri:
        raise LongrunConfigError(
            f"no checkpoint store: set {ENV_CHECKPOINT_URI}=s3://BUCKET/PREFIX/ (or "
            "file:///PATH), or pass --store."
        )
    return store_from_uri(uri)


def _pick(
    key: str,
    env_name: str,
    explicit: Mapping[str, Any],
    overrides: Mapping[str, Any],
    env: Mapping[str, str],
) -> tuple[str, Any]:
    """The winning raw value and the name to blame if it is malformed."""
    if key in overrides:
        return key, overrides[key]
    if explicit.get(key) is not None:
        return key, explicit[key]
    if env_name in env:
        return env_name, env[env_name]
    return key, None


def resolve(
    explicit: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting; ``explicit`` holds the decorator's arguments (``None`` = unset)."""
    env = os.environ if env is None else env
    overrides = overrides or {}

    def pick(key: str, env_name: str) -> tuple[str, Any]:
        return _pick(key, env_name, explicit, overrides, env)

    name, raw = pick("checkpoint", ENV_CHECKPOINT_URI)
    if "checkpoint" not in overrides and env.get(ENV_LOCAL_CHECKPOINT_URI):
        name, raw = ENV_LOCAL_CHECKPOINT_URI, env[ENV_LOCAL_CHECKPOINT_URI]
    store: CheckpointStore | None
    if raw is None:
        store = None
    elif isinstance(raw, str):
        store = store_from_uri(raw, name=name)
    else:
        from .stores.base import CheckpointStore

        if not isinstance(raw, CheckpointStore):
            raise LongrunConfigError(
                f"checkpoint={raw!r} is not a store; pass S3Store(...), FileStore(...) or a "
                "URI string like 's3://bucket/prefix/'."
            )
        store = raw

    name, raw = pick("max_hops", ENV_MAX_HOPS)
    max_hops = DEFAULT_MAX_HOPS if raw is None else _int(name, raw, minimum=0)

    name, raw = pick("margin_ms", ENV_MARGIN_MS)
    margin_ms = None if raw is None else _int(name, raw, minimum=0)

    name, raw = pick("min_margin_ms", ENV_MIN_MARGIN_MS)
    min_margin_ms = DEFAULT_MIN_MARGIN_MS if raw is None else _int(name, raw, minimum=0)
    min_margin_default = raw is None

    name, raw = pick("checkpoint_every_s", ENV_CHECKPOINT_EVERY_S)
    every = DEFAULT_CHECKPOINT_EVERY_S if raw is None else _seconds(name, raw)
    assert every is not None

    name, raw = pick("max_run_seconds", ENV_MAX_RUN_SECONDS)
    max_run = DEFAULT_MAX_RUN_SECONDS if raw is None else _seconds(name, raw, allow_none=True)

    name, raw = pick("disabled", ENV_DISABLED)
    disabled = False if raw is None else _bool(name, raw)

    escalate = resolve_fargate(overrides.get("escalate", explicit.get("escalate")), env)

    if store is None and not disabled:
        raise LongrunConfigError(
            f"no checkpoint store: pass checkpoint=S3Store(...) / FileStore(...) to @longrun, "
            f"or set {ENV_CHECKPOINT_URI}=s3://BUCKET/PREFIX/ (or file:///PATH)."
        )
    return Settings(
        store=store,
        max_hops=max_hops,
        margin_ms=margin_ms,
        min_margin_ms=min_margin_ms,
        checkpoint_every_s=every,
        max_run_seconds=max_run,
        disabled=disabled,
        escalate=escalate,
        min_margin_default=min_margin_default,
    )


def _list(name: str, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        items = [part.strip() for part in raw.split(",")]
    elif isinstance(raw, (list, tuple)):
        items = [str(part).strip() for part in raw]
    else:
        raise LongrunConfigError(f"{name}={raw!r} must be a list (or a comma-separated string).")
    if not all(items):
        raise LongrunConfigError(f"{name}={raw!r} has an empty entry; give e.g. subnet-1,subnet-2.")
    return tuple(items)


def resolve_fargate(fargate: Any, env: Mapping[str, str] | None = None) -> FargateSettings | None:
    """Resolve ``escalate=Fargate(...)`` (fields left ``None`` come from ``LONGRUN_FARGATE_*``).

    Without the argument, escalation is configured when ``LONGRUN_FARGATE_CLUSTER`` is set;
    ``escalate=True`` requires it from the environment; ``escalate=False`` turns it off
    whatever the environment says.
    """
    env = os.environ if env is None else env
    if fargate is False:
        return None
    if fargate is None or fargate is True:
        if fargate is None and not env.get(ENV_FARGATE_CLUSTER):
            return None
        fields: dict[str, Any] = {}
    else:
        if not isinstance(fargate, Fargate):
            raise LongrunConfigError(
                f"escalate={fargate!r} is not a Fargate(...) target; pass "
                "escalate=Fargate(cluster=..., task_definition=..., ...) or False."
            )
        fields = {k: v for k, v in vars(fargate).items() if not k.startswith("_")}

    def pick(key: str, env_name: str) -> tuple[str, Any]:
        if fields.get(key) is not None:
            return f"Fargate({key}=...)", fields[key]
        if env.get(env_name):
            return env_name, env[env_name]
        return env_name, None

    def required(key: str, env_name: str) -> str:
        _, raw = pick(key, env_name)
        if raw is None or not str(raw).strip():
            raise LongrunConfigError(
                f"Fargate escalation needs {key}: pass Fargate({key}=...) or set {env_name}."
            )
        return str(raw).strip()

    cluster = required("cluster", ENV_FARGATE_CLUSTER)
    task_definition = required("task_definition", ENV_FARGATE_TASK_DEFINITION)
    container = required("container", ENV_FARGATE_CONTAINER)
    name, raw = pick("subnets", ENV_FARGATE_SUBNETS)
    if raw is None:
        raise LongrunConfigError(
            f"Fargate escalation needs subnets (awsvpc networking): pass "
            f"Fargate(subnets=[...]) or set {ENV_FARGATE_SUBNETS}=subnet-1,subnet-2."
        )
    subnets = _list(name, raw)
    name, raw = pick("security_groups", ENV_FARGATE_SECURITY_GROUPS)
    security_groups = () if raw is None else _list(name, raw)
    name, raw = pick("assign_public_ip", ENV_FARGATE_ASSIGN_PUBLIC_IP)
    public_ip = False if raw is None else _bool(name, raw)
    name, raw = pick("spot", ENV_FARGATE_SPOT)
    spot = False if raw is None else _bool(name, raw)
    _, platform = pick("platform_version", ENV_FARGATE_PLATFORM_VERSION)
    _, handler = pick("handler", ENV_FARGATE_HANDLER)
    _, function_name = pick("function_name", ENV_FARGATE_FUNCTION_NAME)
    return FargateSettings(
        cluster=cluster,
        task_definition=task_definition,
        container=container,
        subnets=subnets,
        security_groups=security_groups,
        assign_public_ip=public_ip,
        spot=spot,
        platform_version=None if platform is None else str(platform),
        handler=None if handler is None else str(handler),
        function_name=None if function_name is None else str(function_name),
        client=fields.get("client"),
        session=fields.get("session"),
    )


def runner_target(env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """What the container runner was asked to run (from its task's environment)."""
    env = os.environ if env is None else env
    return {
        name: env.get(name) or None
        for name in (ENV_RUN_ID, ENV_HOP, ENV_HANDLER, ENV_FUNCTION_NAME, ENV_EVENT_URI)
    }


def environment() -> MutableMapping[str, str]:
    """The process environment (for the runner, which must merge a function's variables)."""
    return os.environ


RunIdFunc = Callable[[Any], str]
