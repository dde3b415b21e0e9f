"""Resume cost against progress: from a hop's start to its first new item, after 10^3 and
after 10^6 items were done by earlier hops (a FileStore checkpoint, a list being iterated).

The cursor of a list resumes by seeking its iterator, so the cost must not grow with the
items already done; a generator, by contrast, has to be replayed to its position (shown for
comparison). The two runs' hops alternate (the claim's fsync is the noisiest part), REPEAT
hops each; the figure is the ratio of the medians, 10^6 / 10^3.

    python bench/resume_cost.py [--repeat 31]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

from longrun import FileStore, current_run, longrun, ports
from longrun.checkpoint import make_envelope


class Context:
    """A context with ample time left and an ARN to hand off to."""

    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"

    def __init__(self, request_id: str) -> None:
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


class Recorder(ports.Transport):
    """Real clocks; the hand-off is recorded instead of sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def invoke_async(
        self, function: str, payload: bytes, client: Any, *, tenant_id: str | None = None
    ) -> None:
        self.sent.append(json.loads(payload))


class Job:
    """A run that did ``done`` items; each ``hop()`` resumes it and times its first new item."""

    def __init__(
        self, store: FileStore, done: int, source: Callable[[list[int]], Iterable[int]], repeat: int
    ) -> None:
        self.first_item_at: list[float] = []
        self.stop_at = done
        items = list(range(done + repeat + 10))  # built once, outside the measured hops
        self.recorder = Recorder()

        @longrun(checkpoint=store, max_hops=10**6, checkpoint_every_s=3600)
        def handler(event: Any, context: Any) -> None:
            run = current_run()
            for i in run.iterate(source(items)):
                if i >= self.stop_at:
                    self.first_item_at.append(time.perf_counter())
                    self.stop_at = i + 1
                    run.end_hop()  # item i is not finished: the next hop starts with it

        self.handler = handler
        self.hops = 0
        with ports.installed(transport=self.recorder):
            handler({}, Context(f"bench-{done}-0"))  # hop 0 does `done` items, hands off

    def hop(self) -> float:
        self.hops += 1
        envelope = self.recorder.sent[-1]
        with ports.installed(transport=self.recorder):
            start = time.perf_counter()
            self.handler(envelope, Context(f"bench-{self.stop_at}-{self.hops}"))
        assert self.recorder.sent[-1] == make_envelope(envelope["longrun"]["run_id"], self.hops + 1)
        return self.first_item_at[-1] - start


def measure(source: Callable[[list[int]], Iterable[int]], repeat: int) -> tuple[float, float]:
    """Median seconds to the first new item after 10^3 and after 10^6 items, interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        store = FileStore(tmp)
        small, large = Job(store, 10**3, source, repeat), Job(store, 10**6, source, repeat)
        samples: tuple[list[float], list[float]] = ([], [])
        for _ in range(repeat):
            samples[0].append(small.hop())
            samples[1].append(large.hop())
    return statistics.median(samples[0]), statistics.median(samples[1])


def run_all(repeat: int) -> list[dict[str, Any]]:
    rows = []
    sources: dict[str, Callable[[list[int]], Iterable[int]]] = {
        "list": lambda items: items,
        "generator": lambda items: (item for item in items),
    }
    for label, source in sources.items():
        small, large = measure(source, repeat)
        rows.append(
            {
                "name": "resume_cost",
                "iterable": label,
                "after_1e3_ms": round(small * 1000, 3),
                "after_1e6_ms": round(large * 1000, 3),
                "ratio": round(large / small, 3),
                "repeat": repeat,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=31)
    args = parser.parse_args()
    for row in run_all(args.repeat):
        print(
            f"resume ({row['iterable']}): {row['after_1e3_ms']} ms after 10^3 items, "
            f"{row['after_1e6_ms']} ms after 10^6 -> x{row['ratio']}"
        )
        print(json.dumps(row))


if __name__ == "__main__":
    main()
