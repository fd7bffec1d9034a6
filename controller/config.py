"""Controller configuration: defaults, then a TOML file, then flags/environment.

The file is read by ``slipway.conffile`` (``--config``); settings with a flag
are resolved by click, the rest (every field below without a flag) arrive
here as file-only values and are type-checked against the fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from slipway import conffile, errors
from slipway.keys import DEFAULT_PREFIX
from slipway.pki import Bundle

DEFAULT_LISTEN = "127.0.0.1:7070"


@dataclass
class ControllerConfig:
    # Address the gRPC API binds; clients and agents use it (or `advertise`).
    listen: str = DEFAULT_LISTEN
    etcd: list[str] = field(default_factory=lambda: ["127.0.0.1:2379"])
    etcd_prefix: str = DEFAULT_PREFIX
    nats: list[str] = field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    # Copies JetStream keeps of every stream and bucket the controller creates
    # (LOGS, BUILDS, BUILD_EVENTS, the object store): 3 on a 3-server NATS cluster.
    nats_replicas: int = 1
    # Apps answer at APP.BASE_DOMAIN on the routers.
    base_domain: str = "localhost"
    # The URL users are shown for an app ({app} is its name), with the scheme
    # and port the routers really serve; empty: http://{app}.BASE_DOMAIN/.
    web_url: str = ""
    # Make an HTTPS certificate for every APP.BASE_DOMAIN from the cluster CA
    # (needs ca_dir): for a one-label base domain such as localhost, which no
    # wildcard certificate can cover. Off where an operator's *.BASE_DOMAIN
    # certificate should serve (a per-app one would win over it by SNI).
    app_certificates_from_ca: bool = False
    # Automated certificates (certs:auto:enable): the ACME server's directory URL
    # (empty: off), the CA file its HTTPS is checked against (empty: the
    # system's), the contact e-mail of the cluster's account, how long routers
    # get to see a challenge before the CA checks it, and how often an order is
    # polled.
    # The Heroku Platform API (v3) over HTTPS on this address (empty: off).
    platform_api_listen: str = ""
    acme_directory: str = ""
    acme_ca_file: str = ""
    acme_email: str = ""
    acme_propagation_seconds: float = 1.0
    acme_poll_seconds: float = 1.0
    # Operator-defined dyno sizes: {name: {memory_mb, max_processes, cpu_shares}}.
    sizes: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Largest accepted gRPC message (bytes); uploads stream in smaller chunks.
    max_message_bytes: int = 8 * 1024 * 1024
    # Name in leader election (default: host, listen address and a random suffix).
    identity: str = ""
    leader_ttl_seconds: int = 5
    # Full reconcile at least this often, even without etcd events.
    resync_seconds: float = 5.0
    # Daily dyno cycling: each formation dyno is replaced after this many hours
    # plus up to 15 % more (Heroku: 24 h + 0-216 min); 0 turns it off.
    dyno_cycle_hours: float = 24.0
    # Agents heartbeat this often; their presence lease lives this long.
    heartbeat_seconds: int = 5
    node_ttl_seconds: int = 10
    # Builds: largest accepted source upload (compressed), and when a build no
    # builder finished is given up (the builders' own limit plus a grace).
    max_source_mb: int = 200
    build_timeout_seconds: float = 900.0
    build_grace_seconds: float = 120.0
    build_pending_seconds: float = 3600.0
    # The release phase (Procfile `release:`): time limit, and how long to wait for room.
    release_timeout_seconds: float = 900.0
    release_place_seconds: float = 120.0
    # Garbage collection: keep the slugs of each app's newest N releases; run this often;
    # never delete an unreferenced object younger than gc_min_age_seconds (in flight).
    gc_keep_releases: int = 10
    gc_interval_seconds: float = 600.0
    gc_min_age_seconds: float = 3600.0
    # Logs (JetStream stream LOGS): lines kept per app (at least 1500, Heroku's
    # history), whole-stream bounds, and how many
    # live lines a `logs --tail` reader may fall behind before lines are dropped for it.
    logs_max_lines_per_app: int = 1500
    logs_max_bytes: int = 1024 * 1024 * 1024
    logs_max_age_seconds: float = 7 * 24 * 3600.0
    logs_tail_buffer: int = 2000
    # One-off dynos (slipway run): an attached dyno ends after this long with no
    # input and no output, and after run_max_seconds whatever it does (a detached
    # one too, as on Heroku); its
    # placement lives under a lease of run_lease_seconds the session keeps alive.
    run_idle_seconds: float = 3600.0
    run_max_seconds: float = 86400.0
    run_lease_seconds: int = 10
    # Log drains: a controller that dies hands its drains to the others after
    # this long; drain_ca_file adds CAs trusted for syslog+tls and https drains
    # (besides the system's), for receivers with a private CA.
    drain_ttl_seconds: int = 5
    drain_ca_file: str = ""
    # Add-ons: the HTTPS listener providers call back to after answering 202
    # ("" turns it off; port 0 picks a free one, fine for providers on this host;
    # set a fixed one for providers elsewhere); the URL they are given for it
    # ("" : https://LISTEN); how often the leader looks at add-ons besides when
    # woken; the region told to providers.
    addons_listen: str = "127.0.0.1:0"
    addons_callback_url: str = ""
    addons_tick_seconds: float = 5.0
    addons_region: str = "local"
    # Scheduler jobs (scheduler:create): how long a scheduler minute lasts (60;
    # tests shrink it so a "10 minute" job runs every few seconds) and how often
    # the leader looks for due jobs (a run starts at most this late).
    scheduler_minute_seconds: float = 60.0
    scheduler_tick_seconds: float = 5.0
    # This controller's certificate bundle (slipway.pki): its identity towards
    # etcd and NATS and the API's server certificate. None only with insecure.
    credentials: Bundle | None = None
    insecure: bool = False
    # The cluster CA's directory (ca.crt, ca.key): with it this controller admits
    # nodes (JoinService signs their certificates); without it Join is refused.
    ca_dir: str = ""

    @classmethod
    def build(
        cls, file_values: dict[str, Any], source: str = "config", **flags: Any
    ) -> ControllerConfig:
        """File-only values (checked against the fields), then the flags that have a value."""
        names = {f.name for f in fields(cls)}  # other known keys belong to other commands
        values = conffile.check_fields(
            cls, {k: v for k, v in file_values.items() if k in names}, source
        )
        values.update({k: v for k, v in flags.items() if v not in (None, (), [])})
        config = cls(**values)
        if config.logs_max_lines_per_app < 1500:
            raise errors.InvalidArgument(
                "logs_max_lines_per_app must be at least 1500 (`logs -n` shows up to 1500)"
            )
        if config.dyno_cycle_hours < 0:
            raise errors.InvalidArgument("dyno_cycle_hours must be 0 (off) or more")
        if config.scheduler_minute_seconds <= 0 or config.scheduler_tick_seconds <= 0:
            raise errors.InvalidArgument(
                "scheduler_minute_seconds and scheduler_tick_seconds must be more than 0"
            )
        if config.nats_replicas < 1:
            raise errors.InvalidArgument("nats_replicas must be at least 1")
        if config.acme_directory and not config.acme_directory.startswith("https://"):
            raise errors.InvalidArgument(
                f"acme_directory must be an https:// URL, not {config.acme_directory!r}"
            )
        if config.acme_ca_file and not Path(config.acme_ca_file).is_file():
            raise errors.InvalidArgument(f"acme_ca_file {config.acme_ca_file} is not a file")
        if config.app_certificates_from_ca and not config.ca_dir:
            raise errors.InvalidArgument("app_certificates_from_ca needs ca_dir (the cluster CA)")
        if config.web_url and (
            "{app}" not in config.web_url or not config.web_url.startswith(("http://", "https://"))
        ):
            raise errors.InvalidArgument(
                f"web_url must be an http:// or https:// URL with {{app}} in it, "
                f"not {config.web_url!r}"
            )
        return config

    def app_url(self, app: str) -> str:
        """Where users reach ``app``, as apps:create and apps:info print it."""
        template = self.web_url or "http://{app}." + self.base_domain + "/"
        return template.replace("{app}", app)


# Keys a controller config file may hold: every field, plus serve's --log-level.
FILE_KEYS = frozenset({f.name for f in fields(ControllerConfig)} | {"log_level"})


def split_list(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]
