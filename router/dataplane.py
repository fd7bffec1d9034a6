"""The compiled data plane (router/native, module ``slipway_dataplane``) as the
Python control plane drives it.

The data plane owns its listening sockets and every client and dyno
connection; Python hands it immutable snapshots (the route table, the error
pages rendered once, the settings) and collects what it leaves behind (log
lines batched per app, counters). Nothing on the request path calls into
Python. router/native/src/plane.rs says what the data path does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from router import errors_page as pages
from router.table import BALANCE_LEAST_LOADED, RouteTable
from slipway import log

logger = log.get(__name__)

# The answers the data plane gives on its own, by the key it uses.
PAGE_KEYS: Mapping[str, pages.RouterError] = {
    "bad_request": pages.BAD_REQUEST,
    "header_too_large": pages.HEADER_TOO_LARGE,
    "uri_too_long": pages.URI_TOO_LONG,
    "not_implemented": pages.NOT_IMPLEMENTED,
    "no_such_app": pages.NO_SUCH_APP,
    "H10": pages.H10,
    "H11": pages.H11,
    "H12": pages.H12,
    "H13": pages.H13,
    "H14": pages.H14,
    "H17": pages.H17,
    "H18": pages.H18,
    "H19": pages.H19,
    "H20": pages.H20,
    "H21": pages.H21,
    "H28": pages.H28,
    "H80": pages.H80,
    "H81": pages.H81,
    "H99": pages.H99,
}

# host -> (app, web, released, maintenance, crashed, least_loaded, [(address, dyno)])
RouteEntry = tuple[str, int, bool, bool, bool, bool, list[tuple[str, str]]]
Snapshot = dict[str, RouteEntry]


def rendered_pages() -> dict[str, tuple[str, str, int, bytes, bytes]]:
    """Every page as the data plane takes it: (code, desc, status, keep-alive, close)."""
    return {
        key: (
            err.code,
            err.desc,
            err.status,
            pages.render_response(err, keep_alive=True),
            pages.render_response(err, keep_alive=False),
        )
        for key, err in PAGE_KEYS.items()
    }


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def snapshot(table: RouteTable) -> Snapshot:
    """Host name -> the app's route (flags and dynos), for every name an app answers to."""
    by_app: dict[str, RouteEntry] = {
        name: (
            name,
            max(app.web, 0),
            app.released,
            app.maintenance,
            app.crashed,
            app.balance == BALANCE_LEAST_LOADED,
            [(_address(d.host, d.port), d.name) for d in table.dyno_list.get(name, ())],
        )
        for name, app in table.apps.items()
    }
    hosts: Snapshot = {app + table.base_suffix: route for app, route in by_app.items()}
    for domain, app in table.domains.items():
        if app in by_app:
            hosts[domain] = by_app[app]
    return hosts


@dataclass(frozen=True)
class PlaneSettings:
    """Every data plane setting; the names are the ones plane.rs reads."""

    # Threads taking connections from every listener.
    workers: int = 1
    proto: str = "http"
    connect_timeout: float = 5.0
    response_timeout: float = 30.0
    # Between requests on a client keep-alive connection (the router's
    # client_keepalive_timeout).
    idle_timeout: float = 55.0
    quarantine: float = 5.0
    max_attempts: int = 10
    max_inflight_per_dyno: int = 50
    backlog_per_dyno: int = 50
    boot_timeout: float = 75.0
    upstream_idle_timeout: float = 1.5
    upstream_pool_size: int = 64
    body_idle_timeout: float = 55.0
    # Log bytes an app may have waiting between two collections (every 50 ms; a
    # line is about 330 bytes, so 8 MiB is some 500,000 lines a second); beyond:
    # dropped and counted.
    log_bytes_per_app: int = 8 << 20


class NativePlane:
    """One data plane: its threads, listeners and connections."""

    def __init__(self, settings: PlaneSettings = PlaneSettings()) -> None:
        import slipway_dataplane  # built by scripts/build_native.sh

        self._plane = slipway_dataplane.DataPlane(asdict(settings))
        self._plane.set_pages(rendered_pages())

    def listen(self, host: str, port: int, *, tls: bool = False) -> int:
        """Starts accepting on host:port (0: any free port), HTTPS with ``tls``
        (certificates from :meth:`set_certificates`); the bound port."""
        return int(self._plane.listen(_address(host, port), tls=tls))

    def set_certificates(
        self, default: tuple[bytes, bytes] | None, named: Mapping[str, tuple[bytes, bytes]]
    ) -> None:
        """Every certificate as (chain PEM, key PEM): ``default`` for names no
        other matches, ``named`` by host name or ``*.domain``. Applies to new
        handshakes; ValueError (naming the pair) if any pair is unusable."""
        self._plane.set_certificates(default, dict(named))

    def follow(self, table: RouteTable, default: tuple[bytes, bytes] | None = None) -> None:
        """Hands over the table now and after every change to it, and its HTTPS
        certificates (with ``default`` for every other name) and ACME challenges
        whenever they change."""
        pushed = pushed_challenges = -1

        def push() -> None:
            nonlocal pushed, pushed_challenges
            self._plane.set_routes(snapshot(table))
            if table.challenges_version != pushed_challenges:
                self._plane.set_challenges(dict(table.challenges))
                pushed_challenges = table.challenges_version
            if table.certificates_version != pushed:
                named = {name: (p.chain, p.key) for name, p in table.certificates.items()}
                try:
                    self.set_certificates(default, named)
                except ValueError as exc:
                    # Each record was checked when read; keep serving the last good set.
                    logger.warning("certificates refused by the data plane", error=str(exc))
                pushed = table.certificates_version

        push()
        table.listeners.append(push)

    def set_routes(self, routes: Snapshot) -> None:
        self._plane.set_routes(routes)

    def take_logs(self) -> list[tuple[str, bytes]]:
        """Per app, its router lines since the last call: LogLine JSON objects,
        one per line, in the order served."""
        return self._plane.take_logs()

    def counters(self) -> dict[str, int]:
        return dict(self._plane.counters())

    def answers(self) -> list[tuple[int, str, int]]:
        """(status, H code or "", count) of every answer given so far."""
        return self._plane.answers()

    def quarantined(self) -> list[str]:
        """The dyno addresses this router has quarantined now ("host:port")."""
        return self._plane.quarantined()

    def drain(self) -> None:
        """Stops accepting; keep-alive connections close once their request is done."""
        self._plane.drain()

    def stop(self) -> None:
        self._plane.stop()
