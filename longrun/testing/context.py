"""A Lambda context object driven by a virtual clock."""

from __future__ import annotations

import uuid

from .clock import VirtualClock

__all__ = ["FakeContext"]


class FakeContext:
    """The fields of ``awslambdaric``'s LambdaContext that handlers use, on virtual time."""

    def __init__(
        self,
        clock: VirtualClock,
        *,
        timeout_s: float,
        function_name: str = "longrun-sim",
        request_id: str | None = None,
        region: str = "us-east-1",
        account: str = "123456789012",
        memory_mb: int = 1024,
        tenant_id: str | None = None,
    ) -> None:
        self._clock = clock
        self.tenant_id = tenant_id
        """The tenant of an invocation of a tenant-isolated function (Lambda sets it)."""
        self.deadline_s = clock.now + timeout_s
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account}:function:{function_name}"
        self.memory_limit_in_mb = str(memory_mb)
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "sim"
        self.identity = None
        self.client_context = None
        self.longrun_where: str | None = None
        """``"fargate"`` for a simulated container hop (how longrun tells where it runs)."""
        self.longrun_lease_s: float | None = None
        self.stopping = False

    def stop(self, grace_s: float) -> None:
        """A SIGTERM to a (simulated) container: only ``grace_s`` seconds remain."""
        self.stopping = True
        self.deadline_s = min(self.deadline_s, self._clock.now + grace_s)

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds to the deadline, never negative (as in Lambda)."""
        return max(0, int((self.deadline_s - self._clock.now) * 1000))
