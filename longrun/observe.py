"""A hop's logs and metrics, through Powertools for AWS Lambda.

* **Logs.** In Lambda and in the Fargate runner, longrun's own records (the ``longrun`` logger
  and its children) are written by a Powertools ``Logger``: one JSON object per line on
  stdout, level from ``POWERTOOLS_LOG_LEVEL`` / ``LOG_LEVEL``, service from
  ``POWERTOOLS_SERVICE_NAME``. Every record made while a hop runs carries ``run_id``, ``hop``,
  ``where`` and ``function_request_id``; with ``@longrun(..., logger=my_logger)`` the user's
  own Powertools Logger carries them too, for the hop only; longrun's records also name their
  ``logger``. The keys live in a context
  variable, so concurrent runs in one process (threads or asyncio tasks) each log their own.
  ``LONGRUN_LOG_FORMAT``: ``auto`` (the default: Powertools in AWS, unless the ``longrun``
  logger already has handlers), ``powertools`` or ``plain`` (leave logging as configured).
* **Metrics.** One EMF blob per hop through Powertools ``EphemeralMetrics`` (it never mixes
  with the user's own ``Metrics``): ``Hops``, ``Retries``, ``Continuations``, ``Escalations``,
  ``ItemsDone``, ``CheckpointBytes`` and ``CheckpointMs`` (one value per write), ``HandoffMs``,
  ``MarginMs``, ``UnusedMs``. Namespace ``POWERTOOLS_METRICS_NAMESPACE`` (default
  ``longrun``), service ``POWERTOOLS_SERVICE_NAME``, the function name as a dimension.
  ``LONGRUN_METRICS``: ``auto`` (in AWS), ``on`` or ``off``.
* **Traces.** With active tracing in Lambda (an X-Ray trace header, ``POWERTOOLS_TRACE_DISABLED``
  not true), checkpoint loads and saves, hand-offs and escalations are X-Ray subsegments
  (``## longrun checkpoint save``, ...) annotated with ``run_id`` and ``hop``, under the
  invocation's segment beside the user's own Tracer subsegments: one search by annotation
  (``annotation.run_id = "job-42"``) finds every hop of a run. The X-Ray SDK (which Powertools'
  Tracer uses) is imported only then.

Powertools is imported at the first hop, never by ``import longrun`` (it costs about 25 ms).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import LongrunConfigError, shown

__all__ = [
    "ENV_LOG_FORMAT",
    "ENV_METRICS",
    "HOP_KEYS",
    "HopObservation",
    "check_user_logger",
    "setup_logging",
    "traced",
]

ENV_LOG_FORMAT = "LONGRUN_LOG_FORMAT"
ENV_METRICS = "LONGRUN_METRICS"
HOP_KEYS = ("run_id", "hop", "where", "function_request_id")

_keys: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "longrun_hop_keys", default=None
)


class _HopKeys(logging.Filter):
    """Adds the current hop's keys to each record passing a handler (Powertools' formatter
    writes a record's extra attributes as JSON keys)."""

    def filter(self, record: logging.LogRecord) -> bool:
        keys = _keys.get()
        if keys:
            fields = record.__dict__
            for name, value in keys.items():
                fields.setdefault(name, value)
        return True


HOP_KEYS_FILTER = _HopKeys()


class _LoggerName(logging.Filter):
    """Names the logger in longrun's own JSON records (``longrun``, ``longrun.runner``, ...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.setdefault("logger", record.name)
        return True


_setup = threading.Lock()
_logging_done = False


def in_aws() -> bool:
    """Running in Lambda or in an ECS task (the Fargate runner)."""
    return bool(
        os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        or os.environ.get("ECS_CONTAINER_METADATA_URI_V4")
    )


def _choice(env_name: str, allowed: tuple[str, ...]) -> str:
    raw = os.environ.get(env_name, "")
    value = raw.strip().lower() or "auto"
    if value not in allowed:
        raise LongrunConfigError(
            f"{env_name}={shown(raw, 60)} is not one of {', '.join(allowed)}; unset it for auto."
        )
    return value


def setup_logging() -> None:
    """Route longrun's records through a Powertools Logger (once per process)."""
    global _logging_done
    if _logging_done:
        return
    with _setup:
        if _logging_done:
            return
        mode = _choice(ENV_LOG_FORMAT, ("auto", "powertools", "plain"))
        own = logging.getLogger("longrun")
        if mode == "powertools" or (mode == "auto" and in_aws() and not own.handlers):
            from aws_lambda_powertools import Logger

            powertools = Logger(service="longrun", stream=sys.stdout)
            service = os.environ.get("POWERTOOLS_SERVICE_NAME")
            if service:
                powertools.append_keys(service=service)
            powertools.registered_handler.addFilter(HOP_KEYS_FILTER)
            powertools.registered_handler.addFilter(_LoggerName())
        _logging_done = True


def check_user_logger(logger: Any) -> Any:
    """``logger=`` must be a Powertools Logger (checked without importing Powertools)."""
    if logger is not None and not (
        hasattr(logger, "registered_handler") and hasattr(logger, "append_keys")
    ):
        raise LongrunConfigError(
            f"logger={shown(logger, 80)} is not a Powertools Logger; pass "
            "aws_lambda_powertools.Logger(...) (longrun adds run_id, hop, where and "
            "function_request_id to its records during each hop)."
        )
    return logger


def _attach(logger: Any) -> None:
    handler = logger.registered_handler
    if HOP_KEYS_FILTER not in handler.filters:
        handler.addFilter(HOP_KEYS_FILTER)


def metrics_enabled() -> bool:
    mode = _choice(ENV_METRICS, ("auto", "on", "off"))
    return mode == "on" or (mode == "auto" and in_aws())


def check_switches() -> None:
    """Validate ``LONGRUN_LOG_FORMAT`` and ``LONGRUN_METRICS`` (at decoration, like every
    ``LONGRUN_*`` value, so a typo fails at import and not after a claim)."""
    _choice(ENV_LOG_FORMAT, ("auto", "powertools", "plain"))
    metrics_enabled()


class HopObservation:
    """One hop's log keys (set while it runs) and the figures of its metrics blob."""

    def __init__(
        self,
        *,
        run_id: str,
        hop: int,
        where: str,
        request_id: str,
        function_name: str | None,
        retry: bool,
        user_logger: Any = None,
    ) -> None:
        self.keys = {
            "run_id": run_id,
            "hop": hop,
            "where": where,
            "function_request_id": request_id,
        }
        self.function_name = function_name
        self.retry = retry
        self.user_logger = user_logger
        self._token: contextvars.Token[Mapping[str, Any] | None] | None = None
        self._metrics = False

    def open(self) -> None:
        """Set the hop's log keys (read the switches first: a bad one raises here)."""
        setup_logging()
        self._metrics = metrics_enabled()
        if self.user_logger is not None:
            _attach(self.user_logger)
        self._token = _keys.set(self.keys)

    def close(self, figures: Mapping[str, Any]) -> None:
        """Reset the log keys; emit the hop's metrics (never failing the hop)."""
        if self._token is not None:
            _keys.reset(self._token)
            self._token = None
        try:
            if self._metrics:
                self._emit(figures)
        except Exception as exc:  # metrics are never worth a hop
            logging.getLogger("longrun").warning("could not emit metrics: %s", exc)

    def _emit(self, figures: Mapping[str, Any]) -> None:
        from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

        metrics = EphemeralMetrics(
            namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "longrun",
            service=os.environ.get("POWERTOOLS_SERVICE_NAME") or "longrun",
        )
        if self.function_name:
            metrics.add_dimension(name="function_name", value=self.function_name)
        count, ms, size = MetricUnit.Count, MetricUnit.Milliseconds, MetricUnit.Bytes
        add = metrics.add_metric
        add(name="Hops", unit=count, value=1)
        add(name="Retries", unit=count, value=1 if self.retry else 0)
        add(name="Continuations", unit=count, value=1 if figures.get("continued") else 0)
        add(name="Escalations", unit=count, value=1 if figures.get("escalated") else 0)
        add(name="ItemsDone", unit=count, value=figures.get("items", 0))
        for nbytes, seconds in figures.get("writes", ()):
            add(name="CheckpointBytes", unit=size, value=nbytes)
            add(name="CheckpointMs", unit=ms, value=round(seconds * 1000, 3))
        for name in ("HandoffMs", "MarginMs", "UnusedMs"):
            value = figures.get(name)
            if value is not None:
                add(name=name, unit=ms, value=value)
        metrics.flush_metrics()


_TRUE = ("1", "true", "yes", "on")
_xray: Any = None
_xray_lock = threading.Lock()


def tracing_active() -> bool:
    """Active tracing in Lambda: a sampled trace header, and ``POWERTOOLS_TRACE_DISABLED`` not
    set (what Powertools' Tracer itself respects)."""
    header = os.environ.get("_X_AMZN_TRACE_ID")  # absent outside Lambda: the common case
    if not header or "Sampled=1" not in header or not os.environ.get("LAMBDA_TASK_ROOT"):
        return False
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() not in _TRUE


def _recorder() -> Any:
    """The X-Ray SDK's recorder, or ``None`` if the SDK is not installed (logged once)."""
    global _xray
    with _xray_lock:
        if _xray is None:
            try:
                from aws_xray_sdk.core import xray_recorder

                _xray = xray_recorder
            except ImportError:
                logging.getLogger("longrun").warning(
                    "tracing is active but aws-xray-sdk is not installed (it comes with "
                    "aws-lambda-powertools[tracer]): longrun's subsegments are left out"
                )
                _xray = False
        return _xray or None


UNTRACED = contextlib.nullcontext()
"""The shared no-op for a block that is not traced."""


def traced(
    name: str, run_id: str, **annotations: str | int
) -> contextlib.AbstractContextManager[None]:
    """An X-Ray subsegment ``## longrun {name}`` around the block, when tracing is active
    (else a shared no-op: every checkpoint write passes here); a failure of tracing itself
    never reaches the hop."""
    if not tracing_active():
        return UNTRACED
    return _traced(name, run_id, annotations)


@contextlib.contextmanager
def _traced(name: str, run_id: str, annotations: dict[str, str | int]) -> Iterator[None]:
    recorder = _recorder()
    subsegment = None
    if recorder is not None:
        try:
            subsegment = recorder.begin_subsegment(f"## longrun {name}")
            if subsegment is not None:
                subsegment.put_annotation("run_id", run_id)
                for key, value in annotations.items():
                    subsegment.put_annotation(key, value)
        except Exception as exc:  # tracing is never worth a hop
            logging.getLogger("longrun").debug("no subsegment for %s: %s", name, exc)
            subsegment = None
    try:
        yield
    except Exception as exc:
        if subsegment is not None:
            with contextlib.suppress(Exception):
                import traceback

                subsegment.add_exception(exc, traceback.extract_tb(exc.__traceback__))
        raise
    finally:
        if subsegment is not None and recorder is not None:
            with contextlib.suppress(Exception):
                recorder.end_subsegment()
