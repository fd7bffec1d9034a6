"""Who may publish and subscribe what on NATS, and the nats-server config that says so.

With TLS every client presents a certificate of the cluster CA; nats-server's
``verify_and_map`` takes its email SAN ``ROLE@slipway`` (see :mod:`slipway.pki`)
as the NATS user, and each user gets the permissions of its role below. There
is no anonymous user and no password: a client without a certificate of the
CA does not get past the TLS handshake.

What each role does on NATS, and so may do (``*`` one token, ``>`` the rest):

    controller  everything (``>``): it creates every stream, bucket and consumer
                (LOGS, BUILDS, BUILD_EVENTS, OBJ_slugs/sources/caches), submits
                jobs, stores sources, reads and drains logs, reads build events,
                deletes old slugs. Narrowing it would buy little: it also holds
                etcd, which says what runs where.
    root        like the controller: operators' backup and restore read and
                write every bucket.
    node        publishes its dynos' lines (``logs.*.node``), reads slugs
                (``OBJ_slugs``: stream info, message get, an ordered consumer).
    router      publishes router lines (``logs.*.router``); subscribes to nothing.
    builder     takes jobs (the ``builders`` consumer of BUILDS: its info, its
                creation, next message, acks; the max-deliveries advisory; get
                and delete of an exhausted job), publishes build events
                (``builds.output.*``, ``builds.status.*``) and its build lines
                (``logs.*.builder``), reads sources, reads and writes slugs and
                caches.
    addons      reads and writes the built-in postgresql's backups
                (``OBJ_addonbackups``); nothing else.

Streams and buckets are created by the controller only. Other roles check that
they exist (stream info) and wait for them: see ``create=`` in
:func:`slipway.streams.ensure` and :class:`slipway.objstore.ObjectStores`.

Every role but the controller and root gets its own reply prefix,
``_INBOX.ROLE.>`` (:func:`slipway.objstore.inbox_prefix`, passed to nats-py as ``inbox_prefix``),
so one role cannot subscribe to the replies another role's requests get
(JetStream answers, messages of its consumers).

Known limits, the price of one user per role rather than per host:
    - a node may publish lines for any app, as its dynos (``app[web.1]``); it
      cannot pass them off as the router's, the controller's or a build's.
    - a builder may overwrite any slug or cache; agents check a slug against
      its sha256 name before unpacking it, so a changed slug is refused.
    - a node may read every app's slug, a builder every app's source.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from slipway import buildproto, logline, objstore
from slipway.errors import SlipwayError
from slipway.pki import Bundle, Role, nats_user

API = "$JS.API"


@dataclass(frozen=True)
class Permissions:
    """Subjects a user may publish to and subscribe to; nothing else is allowed."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def _inbox(role: Role) -> str:
    return f"{objstore.inbox_prefix(role)}.>"


def read_bucket(bucket: str) -> tuple[str, ...]:
    """What nats-py's object store ``get``/``get_info`` ask for: the bucket's stream
    info, its last meta message, and an ordered push consumer on the chunks."""
    stream = f"OBJ_{bucket}"
    return (
        f"{API}.STREAM.INFO.{stream}",
        f"{API}.STREAM.MSG.GET.{stream}",
        f"{API}.DIRECT.GET.{stream}",
        f"{API}.DIRECT.GET.{stream}.>",
        f"{API}.CONSUMER.CREATE.{stream}",
        f"{API}.CONSUMER.CREATE.{stream}.>",
        f"{API}.CONSUMER.DELETE.{stream}.>",
        f"$JS.FC.{stream}.>",  # flow control replies of the ordered consumer
    )


def write_bucket(bucket: str) -> tuple[str, ...]:
    """``put`` (chunks and meta) and ``delete``; both purge the old chunks."""
    return (f"$O.{bucket}.>", f"{API}.STREAM.PURGE.OBJ_{bucket}")


def _job_queue() -> tuple[str, ...]:
    stream, consumer = buildproto.STREAM, buildproto.CONSUMER
    return (
        f"{API}.STREAM.INFO.{stream}",
        f"{API}.STREAM.INFO.{buildproto.EVENTS_STREAM}",
        f"{API}.CONSUMER.INFO.{stream}.{consumer}",
        # The builders' consumer carries their ack_wait and max_deliver settings.
        f"{API}.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
        f"{API}.CONSUMER.CREATE.{stream}.{consumer}",
        f"{API}.CONSUMER.CREATE.{stream}.{consumer}.>",
        f"{API}.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"$JS.ACK.{stream}.{consumer}.>",
        # A job whose every attempt died: read it, report it failed, remove it.
        f"{API}.STREAM.MSG.GET.{stream}",
        f"{API}.STREAM.MSG.DELETE.{stream}",
        f"{buildproto.OUTPUT_PREFIX}.*",
        f"{buildproto.STATUS_PREFIX}.*",
    )


# nats-py's subscribe() without a stream name looks the stream up by subject.
_STREAM_NAMES = f"{API}.STREAM.NAMES"


def permissions(role: Role) -> Permissions:
    """The permission table (pure): every subject each role needs, and no more."""
    if role in (Role.CONTROLLER, Role.ROOT):
        return Permissions(publish=(">",), subscribe=(">",))
    if role is Role.NODE:
        return Permissions(
            publish=(
                logline.publish_filter(logline.Origin.NODE),
                _STREAM_NAMES,
                *read_bucket(objstore.SLUGS),
            ),
            subscribe=(_inbox(role),),
        )
    if role is Role.ROUTER:
        return Permissions(publish=(logline.publish_filter(logline.Origin.ROUTER),), subscribe=())
    if role is Role.BUILDER:
        return Permissions(
            publish=(
                logline.publish_filter(logline.Origin.BUILDER),
                _STREAM_NAMES,
                *_job_queue(),
                *read_bucket(objstore.SOURCES),
                *read_bucket(objstore.SLUGS),
                *write_bucket(objstore.SLUGS),
                *read_bucket(objstore.CACHES),
                *write_bucket(objstore.CACHES),
            ),
            subscribe=(
                _inbox(role),
                f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{buildproto.STREAM}."
                f"{buildproto.CONSUMER}",
            ),
        )
    if role is Role.ADDONS:
        return Permissions(
            publish=(
                _STREAM_NAMES,
                *read_bucket(objstore.ADDON_BACKUPS),
                *write_bucket(objstore.ADDON_BACKUPS),
            ),
            subscribe=(_inbox(role),),
        )
    raise ValueError(f"no NATS user for role {role.value}")  # ENGINE: servers, not clients


CLIENT_ROLES = (Role.CONTROLLER, Role.NODE, Role.ROUTER, Role.BUILDER, Role.ADDONS, Role.ROOT)


def _q(text: str | Path) -> str:
    return json.dumps(str(text))  # nats-server's config reads JSON strings


def _list(items: Iterable[str]) -> str:
    return "[" + ", ".join(_q(i) for i in items) + "]"


def _allow_or_deny(subjects: tuple[str, ...]) -> str:
    return f"{{ allow: {_list(subjects)} }}" if subjects else '{ deny: [">"] }'


def _user(role: Role) -> str:
    perms = permissions(role)
    return (
        f"    {{ user: {_q(nats_user(role))}, permissions: {{\n"
        f"        publish: {_allow_or_deny(perms.publish)}\n"
        f"        subscribe: {_allow_or_deny(perms.subscribe)}\n"
        "    } }"
    )


def _tls_block(bundle: Bundle, indent: str) -> str:
    return (
        f"{indent}tls {{\n"
        f"{indent}  cert_file: {_q(bundle.cert_file)}\n"
        f"{indent}  key_file: {_q(bundle.key_file)}\n"
        f"{indent}  ca_file: {_q(bundle.ca_file)}\n"
        f"{indent}  verify_and_map: true\n"
        f"{indent}  timeout: 5\n"
        f"{indent}}}\n"
    )


def client_auth_config(tls: Bundle) -> str:
    """Client TLS and the users, for a hand-written server config to ``include``
    (``python -m slipway.natsauth ENGINE_DIR``; see deploy/config/nats-cluster.conf)."""
    users = ",\n".join(_user(role) for role in CLIENT_ROLES)
    return _tls_block(tls, "") + f"authorization {{\n  users = [\n{users}\n  ]\n}}\n"


@dataclass(frozen=True)
class Cluster:
    """Routes between servers: listen on ``host:port``, dial ``routes``."""

    name: str
    host: str
    port: int
    routes: tuple[str, ...] = ()


def server_config(
    *,
    tls: Bundle | None = None,
    cluster: Cluster | None = None,
    max_store_bytes: int = 0,
) -> str:
    """A nats-server config file: JetStream's storage cap; with ``tls``, client TLS
    with a user per role, and (with ``cluster``) routes on TLS between servers
    presenting the ENGINE certificate (their email SAN maps to the one route user)."""
    parts: list[str] = []
    if max_store_bytes:
        parts.append(f"jetstream {{ max_file_store: {max_store_bytes} }}\n")
    if tls is not None:
        parts.append(client_auth_config(tls))
        if cluster is not None:
            parts.append(
                "cluster {\n"
                f"  name: {_q(cluster.name)}\n"
                f"  listen: {_q(f'{cluster.host}:{cluster.port}')}\n"
                f"  routes: {_list(cluster.routes)}\n"
                f"{_tls_block(tls, '  ')}"
                f"  authorization {{ user: {_q(nats_user(Role.ENGINE))} }}\n"
                "}\n"
            )
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Print :func:`client_auth_config` for the ENGINE bundle in ``argv[0]``."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m slipway.natsauth ENGINE_CREDENTIALS_DIR", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(client_auth_config(Bundle(Path(args[0])).check()))
    except SlipwayError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
