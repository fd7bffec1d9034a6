"""A steady stream of HTTP requests to one app through the routers, counted.

A pacer thread issues one request every ``1/rate`` s, alternating between the
routers in ``targets`` (the test may change that list, e.g. after killing a
router); a small pool of worker threads runs them so a slow request (a connect
timeout the router absorbs) does not stop the stream. Every outcome is kept:
which router, status or exception, which dyno answered.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

ERROR_CODE = re.compile(rb'class="code">(\w+)<')


@dataclass(frozen=True)
class Outcome:
    router: str
    ok: bool
    detail: str  # "200 web.3", "503 H19", "ConnectionRefusedError ..."
    dyno: str
    seconds: float


@dataclass
class Load:
    host_header: str
    targets: list[str]
    rate: float = 25.0
    max_seconds: float = 120.0
    timeout: float = 40.0
    outcomes: list[Outcome] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _pool: ThreadPoolExecutor | None = None
    _futures: list[Future[None]] = field(default_factory=list)
    _in_flight: Counter[str] = field(default_factory=Counter)

    def __enter__(self) -> Load:
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="load")
        self._thread = threading.Thread(target=self._pace, name="load-pacer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def finish(self) -> None:
        """Wait until ``max_seconds`` of sending are over, then for the last requests."""
        if self._thread is not None:
            self._thread.join()
        self.stop()

    def stop(self) -> None:
        """Stop sending and wait for the requests in flight (each is bounded by ``timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _pace(self) -> None:
        assert self._pool is not None
        started = time.monotonic()
        n = 0
        while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
            targets = list(self.targets)
            target = targets[n % len(targets)]
            with self._lock:
                self._in_flight[target] += 1
            self._futures.append(self._pool.submit(self._one, target))
            n += 1
            # Pace on the schedule, not on the previous request's end.
            self._stop.wait(max(0.0, started + n / self.rate - time.monotonic()))

    def _one(self, router: str) -> None:
        host, _, port = router.rpartition(":")
        t0 = time.monotonic()
        conn = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
        try:
            conn.request("GET", "/", headers={"Host": self.host_header, "Connection": "close"})
            resp = conn.getresponse()
            body = resp.read()
            dyno = ""
            if resp.status == 200:
                dyno = str(json.loads(body).get("dyno", ""))
                outcome = Outcome(router, True, f"200 {dyno}", dyno, time.monotonic() - t0)
            else:
                found = ERROR_CODE.search(body)  # the router's error page names its H code
                code = found.group(1).decode() if found else body[:60].decode(errors="replace")
                outcome = Outcome(router, False, f"{resp.status} {code}", "", time.monotonic() - t0)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            outcome = Outcome(
                router, False, f"{type(exc).__name__} {exc}", "", time.monotonic() - t0
            )
        finally:
            conn.close()
        with self._lock:
            self.outcomes.append(outcome)
            self._in_flight[router] -= 1

    # -- figures ---------------------------------------------------------------
    def snapshot(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def in_flight(self, router: str) -> int:
        with self._lock:
            return self._in_flight[router]

    @property
    def sent(self) -> int:
        return len(self.snapshot())

    def failures(self, router: str | None = None) -> list[Outcome]:
        return [o for o in self.snapshot() if not o.ok and (router is None or o.router == router)]

    def summary(self) -> str:
        got = self.snapshot()
        failed = [o for o in got if not o.ok]
        per_router = Counter(o.router for o in got)
        slowest = max((o.seconds for o in got), default=0.0)
        reasons = Counter(o.detail for o in failed).most_common(5)
        # Requests a router held past a connect timeout before retrying elsewhere.
        slow = sum(1 for o in got if o.seconds > 1.0)
        return (
            f"requests sent={len(got)} failed={len(failed)} per_router={dict(per_router)} "
            f"slowest={slowest:.2f}s over_1s={slow} failures={reasons}"
        )

    def dynos_seen(self, since: int = 0) -> set[str]:
        return {o.dyno for o in self.snapshot()[since:] if o.ok}
