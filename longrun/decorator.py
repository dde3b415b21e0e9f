"""``@longrun``: one decorator on an existing ``(event, context)`` Lambda handler."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

import wrapt  # 1.x: wrapt 2 imports asyncio, ~35 ms more on every cold start

from . import ports
from .config import Fargate, Settings, resolve
from .errors import LongrunConfigError
from .hop import ClaimedHop, DetachedHop, Response
from .invocation import Invocation
from .observe import check_switches, check_user_logger
from .run import _activate, _deactivate
from .stores.base import CheckpointStore

__all__ = ["longrun"]

F = TypeVar("F", bound=Callable[..., Any])

_Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]
# wrapt 1.x ships no type information: this is the signature of wrapt.decorator we use.
_decorator = cast(Callable[[_Wrapper], Callable[[Callable[..., Any]], Any]], wrapt.decorator)


def _bind(event: Any, context: Any = None, *_args: Any, **_kwargs: Any) -> tuple[Any, Any]:
    return event, context


def _with_event(args: tuple[Any, ...], kwargs: dict[str, Any], event: Any) -> tuple[Any, ...]:
    """The call's arguments with the original event in place of the envelope."""
    if args:
        return (event, *args[1:])
    kwargs["event"] = event
    return args


@overload
def longrun(wrapped: F) -> F: ...


@overload
def longrun(
    wrapped: None = None,
    *,
    checkpoint: CheckpointStore | str | None = None,
    max_hops: int | None = None,
    margin_ms: int | None = None,
    min_margin_ms: int | None = None,
    checkpoint_every_s: float | None = None,
    max_run_seconds: float | str | None = None,
    run_id: Callable[[Any], str] | None = None,
    escalate: Fargate | bool | None = None,
    lambda_client: Any = None,
    disabled: bool | None = None,
    logger: Any = None,
    on_complete: str | Callable[[dict[str, Any]], Any] | None = None,
) -> Callable[[F], F]: ...


def longrun(
    wrapped: F | None = None,
    *,
    checkpoint: CheckpointStore | str | None = None,
    max_hops: int | None = None,
    margin_ms: int | None = None,
    min_margin_ms: int | None = None,
    checkpoint_every_s: float | None = None,
    max_run_seconds: float | str | None = None,
    run_id: Callable[[Any], str] | None = None,
    escalate: Fargate | bool | None = None,
    lambda_client: Any = None,
    disabled: bool | None = None,
    logger: Any = None,
    on_complete: str | Callable[[dict[str, Any]], Any] | None = None,
) -> F | Callable[[F], F]:
    """Make a Lambda handler run for as long as its job needs.

    The handler keeps its ``(event, context)`` signature (sync or ``async def``, function or
    method) and uses :func:`~longrun.current_run` for its state and loops. When time runs
    short the run is checkpointed to ``checkpoint`` and continued in a new asynchronous
    invocation of the same function (same alias or version).

    Every argument left as ``None`` comes from its ``LONGRUN_*`` environment variable, then
    from the default (see ``docs/configuration.md``):

    * ``checkpoint``: ``S3Store(...)``, ``FileStore(...)`` or a URI (``s3://b/p/``,
      ``file:///mnt/efs/x``); env ``LONGRUN_CHECKPOINT_URI``.
    * ``max_hops``: re-invocations allowed after the first (default 10).
    * ``margin_ms``: a fixed margin (taken as given); default adaptive: longest item with
      headroom plus measured write and hand-off costs, never below ``min_margin_ms`` (2000,
      or a fifth of the hop's starting time when that is less).
    * ``checkpoint_every_s``: periodic checkpoint inside ``run.iterate`` (default 60).
    * ``max_run_seconds``: wall-time limit of the whole run (default 86400; ``math.inf`` or
      ``"off"`` for none).
    * ``run_id``: a function of the event giving the run's id, so a repeated start of the
      same job returns the existing run's status; default: the first invocation's
      ``aws_request_id`` (stable across Lambda's retries).
    * ``escalate``: ``Fargate(...)``, where a run continues when Lambda hops cannot carry it
      (hop budget used up, a hop without progress, recursive-loop detection); default: from
      ``LONGRUN_FARGATE_*`` when ``LONGRUN_FARGATE_CLUSTER`` is set, else none; ``False``: none.
    * ``lambda_client``: a boto3 Lambda client for the self re-invocation (default: created
      on first use).
    * ``disabled``: run the handler with no checkpoints and no hops (``LONGRUN_DISABLED``).
    * ``logger``: your Powertools ``Logger``; during each hop its records carry ``run_id``,
      ``hop``, ``where`` and ``function_request_id`` (see ``docs/observability.md``).
    * ``on_complete``: where to say that a run ended (completed, or failed for good), once
      per run: an SNS topic ARN, an SQS queue URL, an EventBridge bus ARN or a callable
      taking the payload (see ``docs/notifications.md``).
    """
    explicit: dict[str, Any] = {
        "checkpoint": checkpoint,
        "max_hops": max_hops,
        "margin_ms": margin_ms,
        "min_margin_ms": min_margin_ms,
        "checkpoint_every_s": checkpoint_every_s,
        "max_run_seconds": max_run_seconds,
        "disabled": disabled,
        "escalate": escalate,
    }
    if wrapped is None:
        return functools.partial(
            longrun,
            run_id=run_id,
            lambda_client=lambda_client,
            logger=logger,
            on_complete=on_complete,
            **explicit,
        )
    check_user_logger(logger)
    notify = None
    if on_complete is not None:
        from .notify import target_of  # only for a handler that notifies

        notify = target_of(on_complete)
    check_switches()
    if run_id is not None and not callable(run_id):
        raise LongrunConfigError(
            f"run_id={run_id!r} must be a function of the event returning the run's id, "
            "e.g. run_id=lambda event: event['job_id']."
        )
    # Validate now, so a malformed LONGRUN_* value fails at import, not in the middle of a run.
    resolve(explicit, ports.active().settings)

    def settings() -> Settings:
        return resolve(explicit, ports.active().settings)

    def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ClaimedHop | DetachedHop | Response:
        """The hop to run the handler in (claimed, or detached when disabled), or an answer."""
        event, context = _bind(*args, **kwargs)
        resolved = settings()
        if resolved.disabled or resolved.store is None:
            return DetachedHop(event, resolved)
        invocation = Invocation(
            resolved,
            resolved.store,
            event,
            context,
            run_id_fn=run_id,
            lambda_client=lambda_client,
            user_logger=logger,
            notify=notify,
        )
        return invocation.begin()

    if inspect.iscoroutinefunction(wrapped):

        @_decorator
        async def async_wrapper(
            wrapped: Callable[..., Any],
            instance: Any,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            handle = start(args, kwargs)
            if isinstance(handle, dict):
                return handle
            try:
                run = handle.run
                token = _activate(run)
                try:
                    result = await wrapped(*_with_event(args, kwargs, run.event), **kwargs)
                except BaseException as exc:
                    return handle.ended(exc)
                finally:
                    _deactivate(token)
                return handle.finished(result)
            finally:
                handle.close()

        return cast(F, async_wrapper(wrapped))

    @_decorator
    def sync_wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        handle = start(args, kwargs)
        if isinstance(handle, dict):
            return handle
        try:
            run = handle.run
            token = _activate(run)
            try:
                result = wrapped(*_with_event(args, kwargs, run.event), **kwargs)
            except BaseException as exc:
                return handle.ended(exc)
            finally:
                _deactivate(token)
            return handle.finished(result)
        finally:
            handle.close()

    return cast(F, sync_wrapper(wrapped))
