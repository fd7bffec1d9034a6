"""`logs --tail` across a controller failover, and StreamLogs' ``after_seq``.

Real etcd and nats-server; lines are published on ``logs.{app}`` as producers do
(the helpers of test_logs_stream). The failover test runs two real controller
processes sharing them, tails through a Client that knows both, kills the serving
controller with SIGKILL while lines keep coming, and checks that every line
arrived exactly once and in order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from slipway import engines
from slipway.client import Client
from slipway.logline import LogLine
from slipway.v1 import platform_pb2 as pb
from slipway.v1 import platform_pb2_grpc
from tests.harness import secure
from tests.harness.controller import ControllerProcess
from tests.harness.wait import eventually
from tests.integration.test_logs_stream import (
    app_lines,
    new_app,
    publish,
    publish_batches,
    router_batches,
    subject_count,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def read(
    controller: ControllerProcess,
    app: str,
    *,
    after_seq: int,
    after_index: int = 0,
    num: int = 1,
    dyno: str = "",
) -> list[pb.LogEntry]:
    """History after a line straight from StreamLogs (the CLI has no flag for it)."""
    with grpc.secure_channel(controller.address, secure.channel_credentials()) as channel:
        stub = platform_pb2_grpc.PlatformServiceStub(channel)
        request = pb.StreamLogsRequest(
            app=app, num=num, dyno=dyno, after_seq=after_seq, after_index=after_index
        )
        metadata = [("authorization", f"Bearer {controller.token}")]
        return [e for r in stub.StreamLogs(request, metadata=metadata, timeout=30) for e in r.lines]


def history(controller: ControllerProcess, app: str, num: int) -> list[pb.LogEntry]:
    with controller.client() as client:
        return list(client.stream_logs(app, num=num))


def test_after_seq_resumes_with_filters_and_ignores_num(controller: ControllerProcess) -> None:
    app = new_app(controller)
    lines = [
        LogLine(app, "app", "worker.1" if i % 3 == 0 else "web.1", f"n {i}", time.time() + i)
        for i in range(10)
    ]
    publish(controller.nats_url, lines)

    def all_kept() -> list[pb.LogEntry]:
        got = history(controller, app, 100)
        return got if len(got) == 10 else []

    kept = eventually(all_kept, 15)
    seqs = [e.seq for e in kept]
    assert all(seqs) and seqs == sorted(set(seqs)), seqs

    resumed = read(controller, app, after_seq=seqs[4])
    assert [e.message for e in resumed] == [f"n {i}" for i in range(5, 10)]
    assert [e.seq for e in resumed] == seqs[5:]
    worker = read(controller, app, after_seq=seqs[4], dyno="worker")
    assert [e.message for e in worker] == ["n 6", "n 9"]
    assert read(controller, app, after_seq=seqs[9]) == []


def test_resume_inside_a_router_batch_sends_exactly_the_lines_after_it(
    controller: ControllerProcess,
) -> None:
    app = new_app(controller)
    publish_batches(controller.nats_url, router_batches(app, [5, 4]))
    publish(controller.nats_url, app_lines(app, ["web after the batches"]))
    publish_batches(controller.nats_url, router_batches(app, [3], first=9))
    texts = [f"request {i}" for i in range(9)] + ["web after the batches"]
    texts += [f"request {i}" for i in range(9, 12)]

    def all_kept() -> list[pb.LogEntry]:
        got = history(controller, app, 100)
        return got if len(got) == len(texts) else []

    kept = eventually(all_kept, 15)
    assert [e.message for e in kept] == texts
    assert [e.index for e in kept] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 0, 1, 2]
    cursors = [(e.seq, e.index) for e in kept]
    assert cursors == sorted(set(cursors))

    # Each line as the last one a client had: the rest, each line once, in order.
    for i, e in enumerate(kept):
        resumed = read(controller, app, after_seq=e.seq, after_index=e.index)
        assert [r.message for r in resumed] == texts[i + 1 :], (i, e.seq, e.index)
        assert [(r.seq, r.index) for r in resumed] == cursors[i + 1 :]
    router = read(controller, app, after_seq=kept[2].seq, after_index=2, dyno="router")
    assert [r.message for r in router] == [f"request {i}" for i in (3, 4, 5, 6, 7, 8, 9, 10, 11)]


def test_after_seq_older_than_the_kept_history_starts_at_the_oldest_kept_line(
    controller: ControllerProcess,
) -> None:
    app = new_app(controller)
    publish(controller.nats_url, app_lines(app, [f"old {i}" for i in range(1600)]))
    eventually(lambda: subject_count(controller.nats_url, app) == 1500, 10)
    # Sequence 1 is long gone (or another app's): the oldest kept line comes first,
    # and nothing claims to know how many lines were lost.
    resumed = read(controller, app, after_seq=1)
    assert [e.message for e in resumed] == [f"old {i}" for i in range(100, 1600)]


@pytest.fixture
def two_controllers(
    etcd_endpoint: str, etcd_prefix: str, nats_url: str, tmp_path: Path
) -> Iterator[tuple[ControllerProcess, ControllerProcess]]:
    """Two controllers on one etcd prefix and one nats-server, as in an HA install."""
    first = ControllerProcess(etcd_endpoint, etcd_prefix, tmp_path / "ctl-a", nats_url)
    first.start()
    second = ControllerProcess(
        etcd_endpoint, etcd_prefix, tmp_path / "ctl-b", nats_url, token=first.token
    )
    try:
        second.start()
        yield first, second
    finally:
        second.stop()
        first.stop()


class Tail:
    """A ``Client.stream_logs(tail=True)`` read in a thread, as the CLI reads it, until
    ``want`` lines came (the generator is closed by the thread iterating it)."""

    def __init__(self, client: Client, app: str, want: int) -> None:
        self.want = want
        self.entries: list[pb.LogEntry] = []
        self.notes: list[tuple[str, str]] = []
        self.error: BaseException | None = None
        self._lines = client.stream_logs(app, tail=True, on_resume=self._note)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _note(self, address: str, reason: str) -> None:
        self.notes.append((address, reason))

    def _read(self) -> None:
        try:
            for e in self._lines:
                self.entries.append(e)
                if len(self.entries) >= self.want:
                    break
        except Exception as exc:  # reported by the test's thread
            self.error = exc
        finally:
            self._lines.close()

    def messages(self) -> list[str]:
        assert self.error is None, self.error
        return [e.message for e in self.entries]

    def has(self, count: int) -> bool:
        return len(self.messages()) >= count


def publish_slowly(nats_url: str, lines: list[LogLine]) -> None:
    """One line per connection, so lines keep coming for a while as the tail moves."""
    for line in lines:
        publish(nats_url, [line])


def test_tail_follows_across_a_kill9_of_its_controller_without_loss_or_repeats(
    two_controllers: tuple[ControllerProcess, ControllerProcess],
) -> None:
    serving, spare = two_controllers
    app = new_app(serving)
    publish(serving.nats_url, app_lines(app, [f"n {i}" for i in range(5)]))
    eventually(lambda: len(history(serving, app, 100)) == 5, 15)

    total = 300
    numbered = app_lines(app, [f"n {i}" for i in range(total)])
    # The first address is tried first: the tail starts on `serving`.
    with Client(
        [serving.address, spare.address], serving.token, ca_file=secure.ca_file()
    ) as client:
        tail = Tail(client, app, want=total + 5)
        eventually(lambda: tail.has(5), 30)
        assert tail.notes == []

        publisher = threading.Thread(
            target=publish_slowly, args=(serving.nats_url, numbered[5:total])
        )
        publisher.start()
        try:
            # Killed while lines are flowing: some reach the tail before, some are
            # published while it reconnects, the rest arrive live from `spare`.
            eventually(lambda: tail.has(60), 60)
            engines.kill9(serving.proc)
        finally:
            publisher.join(120)

        eventually(lambda: tail.has(total), 90, interval=0.2)
        after = app_lines(app, [f"n {i}" for i in range(total, total + 5)])
        publish(spare.nats_url, after)
        eventually(lambda: tail.has(total + 5), 60, interval=0.2)

        assert tail.messages() == [f"n {i}" for i in range(total + 5)]
        seqs = [e.seq for e in tail.entries]
        assert seqs == sorted(set(seqs)) and all(seqs)
        assert [address for address, _ in tail.notes] == [serving.address]
