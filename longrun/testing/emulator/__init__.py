"""A process-level local Lambda: the real ``awslambdaric`` runtime, killed at its deadline.

:class:`LocalLambda` runs a handler the way Lambda runs it, with no Docker and no AWS account:

* **One process per invocation.** Each invocation starts
  ``python -m awslambdaric module.function`` in its own process group, with
  ``AWS_LAMBDA_RUNTIME_API`` pointing at a :class:`~longrun.testing.runtime_api.RuntimeApi`
  of its own and the environment Lambda gives a function (``AWS_LAMBDA_FUNCTION_NAME``,
  ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``, ``AWS_LAMBDA_FUNCTION_VERSION``, log group and stream,
  ``AWS_REGION``, ...; never ``AWS_LAMBDA_MAX_CONCURRENCY``, which would switch the runtime to
  its multi-concurrency mode). The deadline starts when the runtime takes the invocation
  (``next``), as Lambda's invoke phase does; at the deadline the process group gets SIGKILL and
  ``Task timed out after N.NN seconds`` is logged. A process that answered is kept warm for
  the function's next invocation (module state and all, as Lambda keeps it); one that was
  killed or crashed is replaced by a new one (a cold start, ``InvocationRecord.cold``).
* **Invoke API.** boto3 in the function reaches an
  :class:`~longrun.testing.invoke_endpoint.InvokeEndpoint` through ``AWS_ENDPOINT_URL_LAMBDA``.
  ``Event`` invocations are queued and delivered; one that fails (an error, a timeout, a crash)
  is retried with the same event and request id (2 retries by default, after short delays);
  ``duplicate_rate`` delivers an event a second time (same request id) after a random delay
  from a seeded RNG; an event that failed every retry goes to the function's on-failure
  target: by default the safety net (``longrun.safety_net.handler``), itself run as an
  emulated function, with a Lambda destination record. ``RequestResponse`` invocations run the
  same way and answer the caller. Payload limits (1 MB async, 6 MB sync and response) are
  enforced with Lambda's error names.
* **Checkpoints** go to a directory (``file://``, the default) or to S3 in a moto server the
  emulator starts (``store="s3://bucket/prefix/"``); the function gets
  ``LONGRUN_CHECKPOINT_URI``, and the emulator reads the checkpoint after every invocation.
* **Fargate.** The same moto serves ECS and EC2: a cluster, a VPC with a subnet and a security
  group, and per function a FARGATE task definition whose container runs ``longrun-runner`` with
  ``LONGRUN_HANDLER`` and the function's environment. The function gets ``LONGRUN_FARGATE_*``;
  each task it (or the safety net) starts is run as a local runner process by an
  :class:`~longrun.testing.ecs_launcher.EcsLauncher`.

:meth:`LocalLambda.wait` returns when the run has settled (nothing queued, no invocation or
task running, no task waiting to start) with a :class:`Report`: one
:class:`InvocationRecord` per invocation and per task, and a :class:`RunSummary` per run,
including the hop hand-off latencies (see :class:`Handoff` for exactly what is measured).

The package, by concern: :mod:`.local` (:class:`LocalLambda`, which puts the parts together),
:mod:`.deployer`, :mod:`.fargate` (Fargate in moto), :mod:`.invoker` (the Invoke API and its
queue), :mod:`.invocation` (one invocation), :mod:`.checkpoints`, :mod:`.environment`,
:mod:`.reporter` (waiting and reporting), :mod:`.records`, :mod:`.functions`,
:mod:`.moto_server`, :mod:`.core` (what the parts share) and :mod:`.helpers`.
"""

from __future__ import annotations

from .functions import KillAfter as KillAfter
from .functions import LocalFunction
from .helpers import ACCOUNT as ACCOUNT
from .helpers import CONTAINER as CONTAINER
from .helpers import DEFAULT_RETRY_DELAYS_S as DEFAULT_RETRY_DELAYS_S
from .helpers import INIT_TIMEOUT_S as INIT_TIMEOUT_S
from .helpers import REGION as REGION
from .helpers import SAFETY_NET_HANDLER, FunctionError, parse_handler
from .local import LocalLambda
from .moto_server import MotoServer
from .records import Handoff, InvocationRecord, Report, RunSummary
from .records import handoffs as handoffs

__all__ = [
    "SAFETY_NET_HANDLER",
    "FunctionError",
    "Handoff",
    "InvocationRecord",
    "LocalFunction",
    "LocalLambda",
    "MotoServer",
    "Report",
    "RunSummary",
    "parse_handler",
]
