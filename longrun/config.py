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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from .errors import LongrunConfigError

if TYPE_CHECKING:
    from .stores.base import CheckpointStore

__all__ = [
    "ENV_CHECKPOINT_EVERY_S",
    "ENV_CHECKPOINT_URI",
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
ENV_MAX_HOPS = "LONGRUN_MAX_HOPS"
ENV_MARGIN_MS = "LONGRUN_MARGIN_MS"
ENV_MIN_MARGIN_MS = "LONGRUN_MIN_MARGIN_MS"
ENV_CHECKPOINT_EVERY_S = "LONGRUN_CHECKPOINT_EVERY_S"
ENV_MAX_RUN_SECONDS = "LONGRUN_MAX_RUN_SECONDS"
ENV_DISABLED = "LONGRUN_DISABLED"

DEFAULT_MAX_HOPS = 10
DEFAULT_MIN_MARGIN_MS = 2000
DEFAULT_CHECKPOINT_EVERY_S = 60.0
DEFAULT_MAX_RUN_SECONDS = 86400.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
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

    name, raw = pick("checkpoint_every_s", ENV_CHECKPOINT_EVERY_S)
    every = DEFAULT_CHECKPOINT_EVERY_S if raw is None else _seconds(name, raw)
    assert every is not None

    name, raw = pick("max_run_seconds", ENV_MAX_RUN_SECONDS)
    max_run = DEFAULT_MAX_RUN_SECONDS if raw is None else _seconds(name, raw, allow_none=True)

    name, raw = pick("disabled", ENV_DISABLED)
    disabled = False if raw is None else _bool(name, raw)

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
    )


RunIdFunc = Callable[[Any], str]
