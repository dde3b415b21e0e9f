"""Functional tier: real boto3 clients against a real Invoke endpoint and a moto S3 server.

The hand-off (``lambda.invoke(InvocationType="Event")``) goes over HTTP to
:class:`~longrun.testing.invoke_endpoint.InvokeEndpoint`; checkpoints go to moto's S3. Time
is real (``time.sleep`` items, a context computed from ``time.monotonic``), so these tests
also check that the adaptive margin leaves room for a real checkpoint and a real hand-off.
"""

from __future__ import annotations

import json
import queue
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from realtime import RealTimeContext as _RealTimeContext

from longrun import HandoffFailed, RecursionStopped, S3Store, current_run, longrun
from longrun.handoff import lambda_invoke
from longrun.testing.invoke_endpoint import (
    MAX_ASYNC_PAYLOAD,
    MAX_SYNC_PAYLOAD,
    InvokeEndpoint,
    InvokeRequest,
)

FUNCTION = "etl-job"
ARN = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}"

ITEMS = 30
ITEM_S = 0.1
TIMEOUT_S = 1.5
BLOB = 100_000


def RealTimeContext(
    timeout_s: float, *, request_id: str | None = None, arn: str = ARN
) -> Any:
    return _RealTimeContext(timeout_s, arn=arn, request_id=request_id)


@pytest.fixture
def delivered() -> queue.Queue[InvokeRequest]:
    """The async invocations the endpoint accepted, waiting to be run as the next hop."""
    return queue.Queue()


@pytest.fixture
def endpoint(delivered: queue.Queue[InvokeRequest]) -> Iterator[InvokeEndpoint]:
    with InvokeEndpoint(on_event=delivered.put, functions={FUNCTION}) as ep:
        yield ep


@pytest.fixture
def lambda_client(endpoint: InvokeEndpoint) -> Any:
    return endpoint.client(config=Config(retries={"max_attempts": 1}))


def _get_checkpoint(s3_client: Any, bucket: str, run_id: str) -> tuple[dict[str, Any], str]:
    response = s3_client.get_object(Bucket=bucket, Key=f"runs/{run_id}/checkpoint.json")
    return json.loads(response["Body"].read()), response["ETag"]


class Job:
    """A decorated handler over ``ITEMS`` slow items, with a record of what its body did."""

    def __init__(self, s3_client: Any, bucket: str, lambda_client: Any) -> None:
        self.processed: list[int] = []
        self.entries: list[str] = []  # request ids of the invocations that ran user code
        self.hops_seen: list[int] = []

        @longrun(
            checkpoint=S3Store(bucket, prefix="runs/", client=s3_client),
            lambda_client=lambda_client,
            min_margin_ms=300,
            max_hops=20,
        )
        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            self.entries.append(context.aws_request_id)
            run = current_run()
            self.hops_seen.append(run.hop)
            assert len(event["blob"]) == BLOB  # the original event, on every hop
            for item in run.iterate(range(event["count"])):
                time.sleep(ITEM_S)
                self.processed.append(item)
                run.state["done"] = run.state.get("done", 0) + 1
            return {"done": run.state["done"]}

        self.handler: Callable[[Any, Any], Any] = handler

    def invoke(self, event: Any, *, request_id: str | None = None) -> Any:
        return self.handler(event, RealTimeContext(TIMEOUT_S, request_id=request_id))


def _event() -> dict[str, Any]:
    return {"count": ITEMS, "blob": "x" * BLOB}


def _is_status(result: Any) -> bool:
    return isinstance(result, dict) and set(result) == {"longrun"}


def _drive(job: Job, delivered: queue.Queue[InvokeRequest], result: Any) -> Any:
    """Deliver each queued envelope as the next invocation until a final result comes back."""
    for _ in range(25):
        if not _is_status(result):
            assert delivered.empty(), "a hand-off was sent after the run completed"
            return result
        assert result["longrun"]["status"] == "continued", result
        request = delivered.get_nowait()
        assert request.function == ARN
        result = job.invoke(request.json())
    raise AssertionError("the run did not complete in 25 invocations")


# -- the endpoint itself ------------------------------------------------------------------------


def test_invoke_async_reaches_endpoint_with_exact_payload(endpoint: InvokeEndpoint) -> None:
    payload = json.dumps({"longrun": {"v": 1, "run_id": "r-1", "hop": 3}}).encode()

    lambda_invoke.invoke_async(ARN, payload, client=endpoint.client())

    [call] = endpoint.calls
    assert (call.status, call.error) == (202, None)
    request = call.request
    assert request.payload == payload
    assert request.function == ARN  # URL-decoded from the path
    assert request.function_name == FUNCTION
    assert request.qualifier is None
    assert request.invocation_type == "Event"
    assert request.headers["X-Amz-Invocation-Type"] == "Event"


def test_qualified_arn_and_query_qualifier(endpoint: InvokeEndpoint) -> None:
    client = endpoint.client()
    client.invoke(FunctionName=f"{ARN}:live", InvocationType="Event", Payload=b"{}")
    response = client.invoke(FunctionName=FUNCTION, Qualifier="7", Payload=b"{}")
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "7"
    response = client.invoke(FunctionName=f"{FUNCTION}:live", Payload=b"{}")
    assert response["ExecutedVersion"] == "$LATEST"  # aliases are not resolved
    with pytest.raises(ClientError) as info:
        client.invoke(FunctionName=f"{ARN}:live", Qualifier="7", Payload=b"{}")
    assert info.value.response["Error"]["Code"] == "InvalidParameterValueException"
    with pytest.raises(ClientError) as info:
        client.invoke(FunctionName="some-other-function", InvocationType="Event", Payload=b"{}")
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"

    ok = [c.request for c in endpoint.calls if c.error is None]
    assert [(r.function_name, r.qualifier, r.invocation_type) for r in ok] == [
        (FUNCTION, "live", "Event"),
        (FUNCTION, "7", "RequestResponse"),
        (FUNCTION, "live", "RequestResponse"),
    ]


def test_default_client_follows_aws_endpoint_url_lambda(
    endpoint: InvokeEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No code change redirects Lambda: boto3 reads AWS_ENDPOINT_URL_LAMBDA."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", endpoint.url)
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", raising=False)
    monkeypatch.setattr(lambda_invoke, "_client", None)  # restored after the test
    payload = b'{"longrun": {"v": 1, "run_id": "env-run", "hop": 1}}'

    lambda_invoke.invoke_async(ARN, payload)

    assert lambda_invoke.default_client().meta.endpoint_url == endpoint.url
    [request] = endpoint.events
    assert (request.function_name, request.payload) == (FUNCTION, payload)
    monkeypatch.setattr(lambda_invoke, "_client", None)  # do not keep a client at a dead port


def _json_string(size: int) -> bytes:
    """A valid JSON payload of exactly ``size`` bytes."""
    return b'"' + b"a" * (size - 2) + b'"'


def test_payload_limits(endpoint: InvokeEndpoint, lambda_client: Any) -> None:
    # At the limit: accepted, through longrun's own hand-off function.
    lambda_invoke.invoke_async(ARN, _json_string(MAX_ASYNC_PAYLOAD), client=lambda_client)
    assert len(endpoint.events[-1].payload) == MAX_ASYNC_PAYLOAD

    # Over it: Lambda's 413, as a ClientError.
    with pytest.raises(ClientError) as info:
        lambda_client.invoke(
            FunctionName=ARN, InvocationType="Event", Payload=_json_string(MAX_ASYNC_PAYLOAD + 1)
        )
    error = info.value.response["Error"]
    assert error["Code"] == "RequestEntityTooLargeException"
    assert str(MAX_ASYNC_PAYLOAD) in error["Message"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413

    # invoke_async refuses an oversized payload itself, before any request.
    before = len(endpoint.calls)
    with pytest.raises(ValueError, match="exceeds"):
        lambda_invoke.invoke_async(ARN, _json_string(MAX_ASYNC_PAYLOAD + 1), client=lambda_client)
    assert len(endpoint.calls) == before

    # Synchronous: 6 MiB is fine, one byte more is not.
    response = lambda_client.invoke(FunctionName=ARN, Payload=_json_string(MAX_SYNC_PAYLOAD))
    assert response["StatusCode"] == 200
    with pytest.raises(ClientError) as info:
        lambda_client.invoke(FunctionName=ARN, Payload=_json_string(MAX_SYNC_PAYLOAD + 1))
    assert info.value.response["Error"]["Code"] == "RequestEntityTooLargeException"


def test_error_wire_format(endpoint: InvokeEndpoint) -> None:
    """What botocore parses: x-amzn-ErrorType header, JSON body with Type and message."""
    endpoint.fail_next("RecursiveInvocationException")
    request = urllib.request.Request(
        f"{endpoint.url}/2015-03-31/functions/{FUNCTION}/invocations",
        data=b"{}",
        headers={"X-Amz-Invocation-Type": "Event"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 400
    assert info.value.headers["x-amzn-ErrorType"] == "RecursiveInvocationException"
    assert info.value.headers["x-amzn-RequestId"]
    body = json.loads(info.value.read())
    assert body["Type"] == "User" and "recursive loop" in body["message"]


def test_injected_faults_count_down_and_filter(
    endpoint: InvokeEndpoint, lambda_client: Any
) -> None:
    endpoint.fail_next("TooManyRequestsException", times=2, invocation_type="Event")
    endpoint.fail_next("ServiceException", status=503, message="down")

    # A sync call skips the Event-only fault and takes the next one.
    with pytest.raises(ClientError) as info:
        endpoint.client(config=Config(retries={"total_max_attempts": 1})).invoke(
            FunctionName=FUNCTION, Payload=b"{}"
        )
    assert info.value.response["Error"] == {"Code": "ServiceException", "Message": "down"}
    # max_attempts=1 is one retry: both attempts meet the two 429s.
    with pytest.raises(ClientError) as info:
        lambda_client.invoke(FunctionName=FUNCTION, InvocationType="Event", Payload=b"{}")
    assert info.value.response["Error"]["Code"] == "TooManyRequestsException"
    lambda_client.invoke(FunctionName=FUNCTION, InvocationType="Event", Payload=b"{}")

    assert [(c.status, c.error) for c in endpoint.calls] == [
        (503, "ServiceException"),
        (429, "TooManyRequestsException"),
        (429, "TooManyRequestsException"),
        (202, None),
    ]


def test_sync_callback_result_and_function_error() -> None:
    def on_invoke(request: InvokeRequest) -> Any:
        if request.json() == {"boom": True}:
            raise KeyError("boom")
        return {"echo": request.json(), "function": request.function_name}

    with InvokeEndpoint(on_invoke=on_invoke) as endpoint:
        client = endpoint.client()
        response = client.invoke(FunctionName=ARN, Payload=b'{"a": 1}')
        assert response["StatusCode"] == 200
        assert response["ExecutedVersion"] == "$LATEST"
        assert json.loads(response["Payload"].read()) == {"echo": {"a": 1}, "function": FUNCTION}

        response = client.invoke(FunctionName=ARN, Payload=b'{"boom": true}')
        assert response["FunctionError"] == "Unhandled"
        assert json.loads(response["Payload"].read())["errorType"] == "KeyError"

        with pytest.raises(ClientError) as info:
            client.invoke(FunctionName=ARN, Payload=b"{not json")
        assert info.value.response["Error"]["Code"] == "InvalidRequestContentException"


def test_broken_event_callback_is_reported_at_exit() -> None:
    def on_event(request: InvokeRequest) -> None:
        raise RuntimeError("test callback bug")

    with pytest.raises(RuntimeError, match="test callback bug"):  # noqa: SIM117
        with InvokeEndpoint(on_event=on_event) as endpoint:
            client = endpoint.client(config=Config(retries={"total_max_attempts": 1}))
            with pytest.raises(ClientError):
                client.invoke(FunctionName=FUNCTION, InvocationType="Event", Payload=b"{}")


# -- a decorated handler, hop after hop ---------------------------------------------------------


def test_end_to_end_run_hops_through_the_endpoint(
    endpoint: InvokeEndpoint,
    delivered: queue.Queue[InvokeRequest],
    lambda_client: Any,
    s3_client: Any,
    bucket: str,
) -> None:
    job = Job(s3_client, bucket, lambda_client)
    first_request = str(uuid.uuid4())
    started = time.monotonic()

    result = _drive(job, delivered, job.invoke(_event(), request_id=first_request))

    assert time.monotonic() - started < 10
    assert result == {"done": ITEMS}
    assert job.processed == list(range(ITEMS))  # each once, in order
    hops = len(job.entries)
    assert hops >= 3
    assert job.hops_seen == list(range(hops))

    doc, _ = _get_checkpoint(s3_client, bucket, first_request)
    assert doc["status"] == "completed"
    assert doc["result"] == {"done": ITEMS}
    assert doc["hop"] == hops - 1
    assert [h["outcome"] for h in doc["hops"]] == ["continued"] * (hops - 1) + ["completed"]
    assert sum(h["items"] for h in doc["hops"]) == ITEMS

    # Only the small envelope travels; the ~100 KB event stays in the checkpoint.
    events = endpoint.events
    assert len(events) == hops - 1
    for hop, request in enumerate(events, start=1):
        assert len(request.payload) < 1024
        assert request.json() == {"longrun": {"v": 1, "run_id": first_request, "hop": hop}}
        assert request.function == ARN and request.invocation_type == "Event"


@pytest.mark.parametrize("failing_hop", [0, 1])
def test_recursive_invocation_exception_stops_the_run(
    failing_hop: int,
    endpoint: InvokeEndpoint,
    delivered: queue.Queue[InvokeRequest],
    lambda_client: Any,
    s3_client: Any,
    bucket: str,
) -> None:
    job = Job(s3_client, bucket, lambda_client)
    run_id = str(uuid.uuid4())
    event: Any = _event()
    request_id = run_id
    for _ in range(failing_hop):  # hops before the failing one hand off normally
        assert job.invoke(event, request_id=request_id)["longrun"]["status"] == "continued"
        event, request_id = delivered.get_nowait().json(), str(uuid.uuid4())

    endpoint.fail_next("RecursiveInvocationException")
    with pytest.raises(RecursionStopped, match="put-function-recursion-config") as info:
        job.invoke(event, request_id=request_id)
    assert "--recursive-loop Allow" in str(info.value)
    assert delivered.empty()

    doc, etag = _get_checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "failed"
    assert doc["hop"] == failing_hop
    assert doc["error"]["type"] == "RecursionStopped"
    assert doc["error"]["terminal"] is True
    # The progress of the refused hop was checkpointed before the hand-off: nothing is lost.
    done = len(job.processed)
    assert 0 < done < ITEMS
    assert job.processed == list(range(done))
    assert doc["state"] == {"done": done}
    assert doc["cursors"]["#0"]["pos"] == done

    # Lambda re-delivers the same event with the same request id: refused again, no user code.
    entries, calls = len(job.entries), len(endpoint.calls)
    with pytest.raises(RecursionStopped):
        job.invoke(event, request_id=request_id)
    assert len(job.entries) == entries
    assert len(endpoint.calls) == calls
    assert _get_checkpoint(s3_client, bucket, run_id)[1] == etag  # not even rewritten


def test_throttled_handoff_fails_then_lambda_retry_resumes(
    endpoint: InvokeEndpoint,
    delivered: queue.Queue[InvokeRequest],
    lambda_client: Any,
    s3_client: Any,
    bucket: str,
) -> None:
    job = Job(s3_client, bucket, lambda_client)
    run_id = str(uuid.uuid4())
    event = _event()

    endpoint.fail_next("TooManyRequestsException", times=None)  # every attempt, until cleared
    with pytest.raises(HandoffFailed, match="Lambda's retry"):
        job.invoke(event, request_id=run_id)
    calls = endpoint.calls
    assert calls and all(c.error == "TooManyRequestsException" for c in calls)
    assert delivered.empty()

    doc, _ = _get_checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "failed"
    assert doc["error"]["type"] == "HandoffFailed"
    assert doc["error"]["terminal"] is False
    done = len(job.processed)
    assert 0 < done < ITEMS
    assert doc["state"] == {"done": done}
    assert doc["cursors"]["#0"]["pos"] == done

    # Lambda retries the failed async invocation: same event, same request id.
    endpoint.clear_faults()
    result = _drive(job, delivered, job.invoke(event, request_id=run_id))

    assert result == {"done": ITEMS}
    assert job.processed == list(range(ITEMS))  # nothing redone, nothing skipped
    assert job.entries[:2] == [run_id, run_id]
    assert job.hops_seen[:2] == [0, 0]
    doc, _ = _get_checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "completed"
    assert [(h["hop"], h["attempt"], h["outcome"]) for h in doc["hops"][:2]] == [
        (0, 1, "failed"),
        (0, 2, "continued"),
    ]
    assert sum(h["items"] for h in doc["hops"]) == ITEMS


def test_lambda_retry_after_checkpoint_resends_and_handles_refusals(
    endpoint: InvokeEndpoint,
    delivered: queue.Queue[InvokeRequest],
    lambda_client: Any,
    s3_client: Any,
    bucket: str,
) -> None:
    """A retry of a hop that already wrote "continued" re-sends the next hop, no user code."""
    job = Job(s3_client, bucket, lambda_client)
    run_id = str(uuid.uuid4())
    event = _event()
    assert job.invoke(event, request_id=run_id)["longrun"]["status"] == "continued"
    first = delivered.get_nowait()
    entries = len(job.entries)

    # Throttled resend: an error for Lambda to retry, and nothing recorded (the first
    # hand-off may well have gone through).
    endpoint.fail_next("TooManyRequestsException", times=None)
    with pytest.raises(HandoffFailed):
        job.invoke(event, request_id=run_id)
    doc, etag = _get_checkpoint(s3_client, bucket, run_id)
    assert doc["status"] == "continued" and doc["error"] is None
    endpoint.clear_faults()

    # A plain resend: the spare envelope is identical to the first one.
    resent = job.invoke(event, request_id=run_id)
    assert resent["longrun"] == {
        "run_id": run_id,
        "status": "continued",
        "hop": 0,
        "next": "lambda",
        "resent": True,
    }
    assert delivered.get_nowait().payload == first.payload
    assert len(job.entries) == entries

    # Recursion refused on a resend: terminal, recorded, progress kept.
    endpoint.fail_next("RecursiveInvocationException")
    with pytest.raises(RecursionStopped):
        job.invoke(event, request_id=run_id)
    doc, new_etag = _get_checkpoint(s3_client, bucket, run_id)
    assert new_etag != etag
    assert doc["status"] == "failed" and doc["error"]["type"] == "RecursionStopped"
    assert doc["state"] == {"done": len(job.processed)}
    assert len(job.entries) == entries
