"""Backup and restore of the platform state: ``slipway-controller backup|restore``.

A backup is one gzip'd tar file holding:

    manifest.json        format, etcd prefix, revision, time, counts, sha256 of each member
    state.jsonl          every key under the prefix, all read at one revision (one JSON object
                         a line, key and value in base64), except keys bound to a lease:
                         presence, statuses, routes and leadership are written again by
                         their live owners
    objects.json         the object store's listing (bucket -> name, size, digest) and the
                         slugs named by the releases in state.jsonl that were not in it
    etcd.snapshot        etcd's own snapshot of its whole database, for `etcdctl snapshot
                         restore` when an operator rebuilds the etcd cluster itself
    slugs/DIGEST         with ``--with-slugs``: every slug a release names

Restore writes state.jsonl into a prefix that holds no platform state yet
(it refuses otherwise: nothing is overwritten), in transactions that each
create keys only where none exist. Then it checks the object store: slugs the
backup carries and the store lacks are uploaded; releases whose slug is
nowhere are reported by app and version, since their dynos could not start.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from slipway import errors, objstore
from slipway.etcd import KV, Etcd
from slipway.keys import Keys

FORMAT = "slipway-backup/1"
STATE, OBJECTS, MANIFEST, SNAPSHOT = "state.jsonl", "objects.json", "manifest.json", "etcd.snapshot"
SLUG_DIR = "slugs"


@dataclass
class Report:
    """What a backup or a restore did, as the CLI prints it (and ``--json``)."""

    revision: int = 0
    keys: int = 0
    apps: list[str] = field(default_factory=list)
    objects: dict[str, int] = field(default_factory=dict)  # bucket -> objects listed
    slugs_saved: int = 0
    slugs_uploaded: int = 0
    # "app vN: slug 1a2b3c4 is in neither the object store nor the backup"
    missing: list[str] = field(default_factory=list)


# ----- pure parts --------------------------------------------------------------


def kept(kvs: Iterable[KV]) -> list[KV]:
    """The keys a backup keeps: those not bound to a lease (see the module doc)."""
    return [kv for kv in kvs if not kv.lease]


def encode_state(kvs: Sequence[KV]) -> bytes:
    lines = (
        json.dumps(
            {"k": base64.b64encode(kv.key).decode(), "v": base64.b64encode(kv.value).decode()},
            separators=(",", ":"),
        )
        for kv in kvs
    )
    return "".join(f"{line}\n" for line in lines).encode()


def decode_state(data: bytes) -> list[tuple[bytes, bytes]]:
    pairs = []
    for number, line in enumerate(data.decode().splitlines(), 1):
        try:
            obj = json.loads(line)
            pairs.append((base64.b64decode(obj["k"]), base64.b64decode(obj["v"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.InvalidArgument(f"{STATE} line {number} is damaged: {exc}") from exc
    return pairs


def releases_slugs(keys: Keys, pairs: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """``"app vN" -> slug digest`` for every release in the state."""
    marker = keys.releases_all()
    named: dict[str, str] = {}
    for key, value in pairs:
        if not key.startswith(marker):
            continue
        app, _, version = key[len(marker) :].decode().partition("/")
        digest = (json.loads(value).get("slug") or {}).get("digest", "")
        if digest:
            named[f"{app} v{int(version)}"] = digest
    return named


def app_names(keys: Keys, pairs: Iterable[tuple[bytes, bytes]]) -> list[str]:
    marker = keys.apps()
    return sorted(k[len(marker) :].decode() for k, _ in pairs if k.startswith(marker))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


# ----- backup ------------------------------------------------------------------


async def backup(
    etcd: Etcd, keys: Keys, stores: objstore.ObjectStores | None, out: Path, *, with_slugs: bool
) -> Report:
    """Write the backup file ``out`` (via a temporary file: a failed backup leaves none)."""
    snapshot = io.BytesIO()
    await etcd.snapshot(snapshot)
    everything, revision = await etcd.get_prefix(keys.prefix.encode() + b"/")
    state = kept(everything)
    pairs = [(kv.key, kv.value) for kv in state]
    report = Report(revision=revision, keys=len(state), apps=app_names(keys, pairs))
    named = releases_slugs(keys, pairs)

    listing: dict[str, list[dict[str, object]]] = {}
    if stores is not None:
        for bucket in objstore.BUCKETS:
            infos = await stores.infos(bucket)
            listing[bucket] = [
                {"name": i.name, "size": int(i.size or 0), "digest": i.digest or ""}
                for i in sorted(infos, key=lambda i: str(i.name))
            ]
            report.objects[bucket] = len(infos)
        present = {str(o["name"]) for o in listing.get(objstore.SLUGS, [])}
        report.missing = [
            f"{rel}: slug {digest[:7]} is not in the object store"
            for rel, digest in sorted(named.items())
            if digest not in present
        ]
    objects = {"buckets": listing, "releases": named, "missing": report.missing}

    members = {
        STATE: encode_state(state),
        OBJECTS: json.dumps(objects, indent=1, sort_keys=True).encode(),
        SNAPSHOT: snapshot.getvalue(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".backup-") as work:
        slug_files: dict[str, Path] = {}
        if with_slugs:
            if stores is None:
                raise errors.InvalidArgument("--with-slugs needs NATS (--nats)")
            present = {str(o["name"]) for o in listing.get(objstore.SLUGS, [])}
            for digest in sorted(set(named.values())):
                if digest in present:
                    path = Path(work) / digest
                    await stores.get_file(objstore.SLUGS, digest, path)
                    slug_files[digest] = path
            report.slugs_saved = len(slug_files)
        manifest = {
            "format": FORMAT,
            "prefix": keys.prefix,
            "revision": revision,
            "taken_at": time.time(),
            "keys": len(state),
            "apps": report.apps,
            "sha256": {name: _sha256(data) for name, data in members.items()},
            "slugs": sorted(slug_files),
        }
        partial = Path(work) / "backup.tar.gz"
        with tarfile.open(partial, "w:gz") as tar:
            _add(tar, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
            for name, data in members.items():
                _add(tar, name, data)
            for digest, path in slug_files.items():
                tar.add(path, arcname=f"{SLUG_DIR}/{digest}")
        partial.chmod(0o600)  # it holds every app's config vars
        partial.replace(out)
    return report


# ----- restore -----------------------------------------------------------------


@dataclass
class Backup:
    manifest: dict[str, object]
    pairs: list[tuple[bytes, bytes]]
    objects: dict[str, object]
    tar: tarfile.TarFile

    @property
    def prefix(self) -> str:
        return str(self.manifest.get("prefix", ""))


def open_backup(path: Path) -> Backup:
    """Read and check a backup file: format, and each member against its digest."""
    try:
        tar = tarfile.open(path, "r:gz")
        manifest = json.loads(_member(tar, MANIFEST))
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise errors.InvalidArgument(f"{path} is not a Slipway backup: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise errors.InvalidArgument(
            f"{path} has format {manifest.get('format')!r}; this version reads {FORMAT}"
        )
    digests = manifest.get("sha256") or {}
    for name in (STATE, OBJECTS):
        if _sha256(_member(tar, name)) != digests.get(name):
            raise errors.InvalidArgument(f"{path}: {name} does not match its digest (damaged?)")
    return Backup(
        manifest, decode_state(_member(tar, STATE)), json.loads(_member(tar, OBJECTS)), tar
    )


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        fh = tar.extractfile(name)
    except KeyError as exc:
        raise errors.InvalidArgument(f"the backup has no {name}") from exc
    if fh is None:
        raise errors.InvalidArgument(f"the backup's {name} is not a file")
    return fh.read()


def moved(pairs: list[tuple[bytes, bytes]], old: str, new: str) -> list[tuple[bytes, bytes]]:
    """The pairs with their prefix ``old`` replaced by ``new`` (restore elsewhere)."""
    if old == new:
        return pairs
    head = old.rstrip("/").encode()
    return [(new.rstrip("/").encode() + k[len(head) :], v) for k, v in pairs]


async def restore(
    etcd: Etcd, keys: Keys, stores: objstore.ObjectStores | None, backup: Backup
) -> Report:
    existing, _ = await etcd.get_prefix(keys.prefix.encode() + b"/")
    held = kept(existing)
    if held:
        raise errors.FailedPrecondition(
            f"etcd already holds {len(held)} keys of platform state under {keys.prefix}; "
            "restore writes only into an empty platform (nothing is overwritten)"
        )
    pairs = moved(backup.pairs, backup.prefix, keys.prefix)
    await etcd.create_all(pairs)
    report = Report(
        revision=int(str(backup.manifest.get("revision", 0))),
        keys=len(pairs),
        apps=app_names(keys, pairs),
    )
    named = releases_slugs(keys, pairs)
    if stores is None:
        return report
    present = set(await stores.names(objstore.SLUGS))
    carried = set(map(str, backup.manifest.get("slugs") or []))  # type: ignore[call-overload]
    with tempfile.TemporaryDirectory(prefix="slipway-restore-") as work:
        for digest in sorted(set(named.values()) - present):
            if digest not in carried:
                continue
            path = Path(work) / digest
            data = _member(backup.tar, f"{SLUG_DIR}/{digest}")
            if hashlib.sha256(data).hexdigest() != digest:
                raise errors.InvalidArgument(f"the backup's slug {digest[:7]} is damaged")
            path.write_bytes(data)
            await stores.put_file(objstore.SLUGS, digest, path)
            path.unlink()
            present.add(digest)
            report.slugs_uploaded += 1
    report.missing = [
        f"{rel}: slug {digest[:7]} is in neither the object store nor the backup"
        for rel, digest in sorted(named.items())
        if digest not in present
    ]
    return report
