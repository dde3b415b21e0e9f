"""``Run``'s steps, sleeps and callbacks: the methods that delegate to ``longrun.steps`` and
``longrun.callbacks`` (imported on first use), kept apart from the loops in ``run.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

from .errors import LongrunError, shown

if TYPE_CHECKING:
    from .fanout import MapResults
    from .run import Run
    from .stores.base import CheckpointStore

__all__ = ["SideObjects", "WaitsMixin"]

T = TypeVar("T")


class SideObjects:
    """The run's store, where large step results and callback answers go (``put``/``read``
    of a named object), with the function and tenant that ``run.map`` invokes children as."""

    def __init__(
        self, store: CheckpointStore, *, function: str | None, tenant_id: str | None
    ) -> None:
        self.store = store
        self.put = store.put_object
        self.read = store.read_object
        self.function = function
        self.tenant_id = tenant_id


class WaitsMixin:
    """``run.step``, ``run.sleep``, ``run.sleep_until``, ``run.callback`` and
    ``run.wait_for_callback`` (see ``docs/steps.md``)."""

    def step(
        self,
        name: str,
        fn: Callable[..., T],
        *args: Any,
        retry: Any = None,
        at_most_once: bool = False,
        **kwargs: Any,
    ) -> T:
        """Run ``fn(*args, **kwargs)`` once for the whole run and return its result: a later
        hop gets the stored result without calling ``fn``. ``retry``: a ``longrun.Retry``
        (a backoff longer than the hop has left ends the hop; the run is woken after it).
        ``at_most_once``: a call interrupted midway is not made again; the next
        ``run.step`` of that name raises ``StepInterrupted``."""
        step = _STEP[0] if _STEP else _load_step()
        result: T = step(_run(self), name, fn, args, kwargs, retry=retry, at_most_once=at_most_once)
        return result

    def sleep(self, seconds: float, *, name: str) -> None:
        """Sleep ``seconds`` once for the whole run: in the process when it fits in this hop
        (less the margin), else the hop ends and the run is woken after it, with no compute
        in between. A finished sleep is never slept again."""
        from .steps import sleep_until

        if not (isinstance(seconds, (int, float)) and seconds >= 0):
            raise LongrunError(f"run.sleep({shown(seconds)}): give a number of seconds >= 0.")
        sleep_until(_run(self), name, None, float(seconds))

    def sleep_until(self, when: Any, *, name: str) -> None:
        """Sleep until ``when`` (an aware ``datetime`` or epoch seconds), as ``sleep`` does."""
        from .steps import epoch_ms, sleep_until

        sleep_until(_run(self), name, epoch_ms(when), None)

    async def sleep_async(self, seconds: float, *, name: str) -> None:
        """``run.sleep`` for ``async def`` handlers: a wait that fits in the hop is an
        ``asyncio.sleep`` (the event loop runs the handler's other tasks meanwhile)."""
        from .steps import sleep_until_async

        if not (isinstance(seconds, (int, float)) and seconds >= 0):
            raise LongrunError(f"run.sleep_async({shown(seconds)}): give a number of seconds >= 0.")
        await sleep_until_async(_run(self), name, None, float(seconds))

    async def sleep_until_async(self, when: Any, *, name: str) -> None:
        """``run.sleep_until`` for ``async def`` handlers (see :meth:`sleep_async`)."""
        from .steps import epoch_ms, sleep_until_async

        await sleep_until_async(_run(self), name, epoch_ms(when), None)

    def callback(self, name: str, *, timeout_s: float | None = None) -> str:
        """A token for an outside system to answer (``longrun.send_callback``); the same token
        on every hop. ``timeout_s``: after it, ``wait_for_callback`` raises CallbackTimeout."""
        from .callbacks import callback

        return callback(_run(self), name, timeout_s)

    def wait_for_callback(self, name: str) -> Any:
        """The answer's payload if it has arrived; otherwise the hop ends and the run waits
        for it with no compute (CallbackTimeout after the timeout, CallbackFailed for a
        failure answer)."""
        from .callbacks import wait_for_callback

        return wait_for_callback(_run(self), name)

    def map(
        self,
        name: str,
        items: Iterable[Any],
        *,
        max_concurrency: int = 10,
        tolerated_failures: int | None = None,
        tolerated_failure_ratio: float | None = None,
        function: str | None = None,
    ) -> MapResults:
        """Run each item as the event of a child run (of this function, or of ``function``),
        at most ``max_concurrency`` at once, and return their results in item order (read
        lazily from the store). The hop ends while the children run; the last child to
        finish wakes the run. Failed children beyond ``tolerated_failures`` (default 0) or
        ``tolerated_failure_ratio`` raise MapFailed naming them. See ``docs/fanout.md``."""
        from .fanout import run_map

        return run_map(
            _run(self),
            name,
            items,
            max_concurrency=max_concurrency,
            tolerated_failures=tolerated_failures,
            tolerated_failure_ratio=tolerated_failure_ratio,
            function=function,
        )

    def wait_until_ms(self, until_ms: int | None, *, kind: str, name: str) -> NoReturn:
        """End this hop waiting until ``until_ms`` (epoch ms; ``None``: until an answer):
        checkpointed ``waiting``, woken then by a one-time schedule."""
        from .run import WaitHop

        run = _run(self)
        if run.signal is not None:
            raise run.signal
        run._freeze_cursors()
        run.signal = WaitHop(until_ms, kind, name)
        raise run.signal

    def step_records(self) -> dict[str, dict[str, Any]]:
        """The step and sleep records as they would be saved now."""
        return _run(self)._step_records


_STEP: list[Callable[..., Any]] = []
"""``longrun.steps.step`` once imported (on first use: not at cold start; then without an
import statement at every step)."""


def _load_step() -> Callable[..., Any]:
    from .steps import step

    _STEP.append(step)
    return step


def _run(mixin: WaitsMixin) -> Run:
    """The ``Run`` this mixin is part of (for the type checker)."""
    return cast("Run", mixin)
