"""The route table: which app a host name means, and where its web dynos listen.

Filled from etcd by :class:`TableWatcher`: list everything under
``{prefix}/routes/``, then watch from the revision after that list. If etcd goes
away the table is left exactly as it was (a lost store must never empty the
routing table); the watcher reconnects with backoff and re-lists, swapping
the fresh table in whole, so changes made meanwhile arrive. A full re-list
also runs every ``resync_interval`` to heal anything a watch missed.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from slipway import certs, errors, log
from slipway.backoff import Backoff
from slipway.etcd import KV, Etcd
from slipway.keys import Keys
from slipway.pki import Bundle
from slipway.sealing import Sealer

logger = log.get(__name__)

BALANCE_RANDOM = "random"
BALANCE_LEAST_LOADED = "least-loaded"


@dataclass(frozen=True, slots=True)
class AppRoute:
    name: str
    web: int = 0
    released: bool = False
    maintenance: bool = False
    crashed: bool = False
    balance: str = BALANCE_RANDOM


@dataclass(frozen=True, slots=True)
class DynoRoute:
    app: str
    name: str  # "web.1"
    host: str
    port: int
    # "host:port": the key of this router's per-dyno state (in-flight,
    # quarantine, pool); a field, not a property, as it is read per request.
    address: str = ""

    def __post_init__(self) -> None:
        if not self.address:
            object.__setattr__(self, "address", f"{self.host}:{self.port}")


def parse_app(name: str, value: bytes) -> AppRoute:
    obj = json.loads(value)
    balance = str(obj.get("balance") or BALANCE_RANDOM)
    return AppRoute(
        name=name,
        web=int(obj.get("web", 0)),
        released=bool(obj.get("released", False)),
        maintenance=bool(obj.get("maintenance", False)),
        crashed=bool(obj.get("crashed", False)),
        balance=balance if balance == BALANCE_LEAST_LOADED else BALANCE_RANDOM,
    )


def parse_dyno(app: str, dyno: str, value: bytes) -> DynoRoute:
    obj = json.loads(value)
    host, sep, port = str(obj["address"]).rpartition(":")
    if not sep:
        raise ValueError("dyno address has no port")
    return DynoRoute(
        app=app, name=str(obj.get("dyno") or dyno), host=host.strip("[]"), port=int(port)
    )


class RouteTable:
    """Apps, dynos and custom domains, as last seen in etcd."""

    def __init__(self, keys: Keys, base_domain: str, sealer: Sealer | None = None) -> None:
        self._routes = keys.routes().decode()
        # Opens certificates' sealed private keys (the router bundle's cluster key).
        self.sealer = sealer
        self.base_suffix = "." + base_domain.strip(".").lower()
        self.apps: dict[str, AppRoute] = {}
        self.dynos: dict[str, dict[str, DynoRoute]] = {}
        self.domains: dict[str, str] = {}
        # app -> its dynos as a tuple, rebuilt on change: random.choice wants a sequence.
        self.dyno_list: dict[str, tuple[DynoRoute, ...]] = {}
        # host name or "*.domain" -> its HTTPS certificate (checked when read)
        self.certificates: dict[str, certs.Pair] = {}
        # Bumped when a certificate changes: the data plane then takes the new set.
        self.certificates_version = 0
        # ACME HTTP-01 token -> key authorization (routes/acme/), and its version.
        self.challenges: dict[str, str] = {}
        self.challenges_version = 0
        self.revision = 0
        self.loaded = False
        # Called after every change.
        self.listeners: list[Callable[[], None]] = []

    # -- changes ------------------------------------------------------------
    def replace(self, kvs: Iterable[KV], revision: int) -> None:
        """Swap in a full listing at once (no request sees a half-built table)."""
        fresh = RouteTable.__new__(RouteTable)
        fresh.apps, fresh.dynos, fresh.domains, fresh._routes = {}, {}, {}, self._routes
        fresh.certificates, fresh.certificates_version = {}, 0
        fresh.challenges, fresh.challenges_version = {}, 0
        fresh.sealer = self.sealer
        for kv in kvs:
            fresh._put(kv.key, kv.value)
        self.apps, self.dynos, self.domains = fresh.apps, fresh.dynos, fresh.domains
        if fresh.challenges != self.challenges:
            self.challenges = fresh.challenges
            self.challenges_version += 1
        if fresh.certificates != self.certificates:
            self.certificates = fresh.certificates
            self.certificates_version += 1
        self.dyno_list = {app: tuple(d.values()) for app, d in self.dynos.items()}
        self.revision = revision
        self.loaded = True
        self._changed()

    def apply(self, kind: str, key: bytes, value: bytes, revision: int) -> None:
        if kind == "put":
            app = self._put(key, value)
        else:
            app = self._delete(key)
        if app is not None:
            self.dyno_list[app] = tuple(self.dynos.get(app, {}).values())
        self.revision = max(self.revision, revision)
        self._changed()

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    def _split(self, key: bytes) -> list[str] | None:
        text = key.decode(errors="replace")
        if not text.startswith(self._routes):
            return None
        return text[len(self._routes) :].split("/")

    def _put(self, key: bytes, value: bytes) -> str | None:
        """Returns the app whose dyno list changed, if any."""
        parts = self._split(key)
        if not parts:
            return None
        try:
            if parts[0] == "apps" and len(parts) == 2:
                self.apps[parts[1]] = parse_app(parts[1], value)
            elif parts[0] == "dynos" and len(parts) == 3:
                app, dyno = parts[1], parts[2]
                self.dynos.setdefault(app, {})[dyno] = parse_dyno(app, dyno, value)
                return app
            elif parts[0] == "domains" and len(parts) == 2:
                self.domains[parts[1].lower()] = str(json.loads(value)["app"])
            elif parts[0] == "certs" and len(parts) == 2:
                self.certificates[parts[1].lower()] = certs.decode(value, self.sealer)
                self.certificates_version += 1
            elif parts[0] == "acme" and len(parts) == 2:
                self.challenges[parts[1]] = str(json.loads(value)["key_authorization"])
                self.challenges_version += 1
        except (ValueError, KeyError, TypeError, errors.InvalidArgument) as exc:
            # A bad record must not take the router down; it is simply not routed.
            logger.warning("bad route record", key=key.decode(errors="replace"), error=str(exc))
        return None

    def _delete(self, key: bytes) -> str | None:
        parts = self._split(key)
        if not parts:
            return None
        if parts[0] == "apps" and len(parts) == 2:
            self.apps.pop(parts[1], None)
        elif parts[0] == "dynos" and len(parts) == 3:
            dynos = self.dynos.get(parts[1])
            if dynos is not None:
                dynos.pop(parts[2], None)
                if not dynos:
                    del self.dynos[parts[1]]
            return parts[1]
        elif parts[0] == "domains" and len(parts) == 2:
            self.domains.pop(parts[1].lower(), None)
        elif parts[0] == "certs" and len(parts) == 2:
            if self.certificates.pop(parts[1].lower(), None) is not None:
                self.certificates_version += 1
        elif parts[0] == "acme" and len(parts) == 2:
            if self.challenges.pop(parts[1], None) is not None:
                self.challenges_version += 1
        return None


class TableWatcher:
    """Keeps a :class:`RouteTable` in step with etcd, surviving etcd outages.

    The etcd client (gRPC) runs in a thread of its own with a plain asyncio
    loop: gRPC's asyncio integration is not reliable on uvloop, and the loop
    that serves requests should never run gRPC work anyway. The thread only
    reads etcd; every change to the table is handed to the serving loop with
    ``call_soon_threadsafe``, so the table is only ever touched by one thread.
    """

    def __init__(
        self,
        endpoints: Iterable[str],
        keys: Keys,
        table: RouteTable,
        *,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        resync_interval: float = 300.0,
        credentials: Bundle | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.credentials = credentials
        self.keys = keys
        self.table = table
        self.backoff = Backoff(initial=backoff_initial, maximum=backoff_max)
        self.resync_interval = resync_interval
        self.ready = asyncio.Event()
        self.connected = False
        self.relists = 0

    async def run(self) -> None:
        main = asyncio.get_running_loop()
        started = threading.Event()
        handle: dict[str, object] = {}

        def thread_main() -> None:
            async def body() -> None:
                handle["loop"] = asyncio.get_running_loop()
                handle["task"] = asyncio.current_task()
                started.set()
                await self._watch(main)

            try:
                asyncio.run(body())
            except asyncio.CancelledError:
                pass

        thread = threading.Thread(target=thread_main, name="route-watcher", daemon=True)
        thread.start()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            await main.run_in_executor(None, started.wait, 5.0)
            loop, task = handle.get("loop"), handle.get("task")
            if isinstance(loop, asyncio.AbstractEventLoop) and isinstance(task, asyncio.Task):
                loop.call_soon_threadsafe(task.cancel)
            await main.run_in_executor(None, thread.join, 5.0)

    # -- in the watcher thread ------------------------------------------------
    async def _watch(self, main: asyncio.AbstractEventLoop) -> None:
        prefix = self.keys.routes()
        etcd = Etcd(self.endpoints, credentials=self.credentials)
        try:
            while True:
                try:
                    await etcd.connect()
                    kvs, revision = await etcd.get_prefix(prefix)
                    main.call_soon_threadsafe(self._loaded, kvs, revision)
                    self.backoff.reset()
                    try:
                        async with asyncio.timeout(self.resync_interval):
                            async for event in etcd.watch_prefix(prefix, revision + 1):
                                main.call_soon_threadsafe(
                                    self.table.apply,
                                    event.kind,
                                    event.key,
                                    event.value,
                                    event.mod_revision,
                                )
                    except TimeoutError:
                        continue  # periodic full resync
                    # The stream ended without an error: treat like a break.
                    raise errors.Unavailable("etcd watch ended", reason="etcd_unavailable")
                except Exception as exc:
                    # Anything at all (not only the etcd errors we know): a watcher
                    # thread that died would leave this router on a stale table for
                    # good, while a retry costs nothing.
                    main.call_soon_threadsafe(self._lost)
                    delay = self.backoff.next()
                    # Keep serving from the table we have; just try again later.
                    logger.warning(
                        "etcd unavailable, keeping last route table",
                        error=str(exc) if isinstance(exc, errors.SlipwayError) else repr(exc),
                        retry_in=round(delay, 2),
                    )
                    await asyncio.sleep(delay)
        finally:
            try:
                await asyncio.wait_for(etcd.close(), 2.0)
            except Exception:
                pass

    # -- on the serving loop ----------------------------------------------------
    def _loaded(self, kvs: list[KV], revision: int) -> None:
        self.table.replace(kvs, revision)
        self.relists += 1
        self.connected = True
        self.ready.set()
        logger.info("route table loaded", revision=revision, apps=len(self.table.apps))

    def _lost(self) -> None:
        self.connected = False
