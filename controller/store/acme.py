"""Automated certificates in etcd: which apps have them on, each domain's
status, and the cluster's ACME account (any controller reads; the leader's
loop, controller/loops/acme.py, orders)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from controller.core.acme import AcmeStatus
from controller.store.state import State
from slipway import errors
from slipway.sealing import Sealer


@dataclass(frozen=True)
class Account:
    directory: str
    url: str
    key_sealed: str


class AcmeStore:
    def __init__(self, state: State) -> None:
        self.state = state
        self.etcd = state.etcd
        self.keys = state.keys

    async def enabled(self, app: str) -> bool:
        await self.state.get_app(app)
        return await self.etcd.get(self.keys.acme_app(app)) is not None

    async def enable(self, app: str) -> bool:
        """Turn automated certificates on; False when they already were."""
        await self.state.get_app(app)
        record = json.dumps({"since": self.state.clock.now()}).encode()
        return await self.etcd.create(self.keys.acme_app(app), record)

    async def disable(self, app: str) -> bool:
        await self.state.get_app(app)
        deleted = await self.etcd.delete(self.keys.acme_app(app))
        await self.etcd.delete_prefix(self.keys.acme_statuses(app))
        return deleted

    async def enabled_apps(self) -> list[str]:
        prefix = self.keys.acme_apps()
        kvs, _ = await self.etcd.get_prefix(prefix)
        return sorted(kv.key[len(prefix) :].decode() for kv in kvs)

    async def statuses(self, app: str | None = None) -> dict[tuple[str, str], AcmeStatus]:
        prefix = self.keys.acme_statuses(app)
        kvs, _ = await self.etcd.get_prefix(prefix)
        out: dict[tuple[str, str], AcmeStatus] = {}
        root = self.keys.acme_statuses()
        for kv in kvs:
            owner, _, _ = kv.key[len(root) :].decode().partition("/")
            status = AcmeStatus.decode(kv.value)
            out[(owner, status.hostname)] = status
        return out

    async def put_status(self, app: str, status: AcmeStatus) -> None:
        # Only while the app has them on: a status must not outlive a disable.
        tx = self.etcd.tx
        await self.etcd.txn(
            compare=[tx.version(self.keys.acme_app(app)) > 0],
            success=[tx.put(self.keys.acme_status(app, status.hostname), status.encode())],
        )

    async def delete_status(self, app: str, host: str) -> None:
        await self.etcd.delete(self.keys.acme_status(app, host))

    async def account(self) -> Account | None:
        kv = await self.etcd.get(self.keys.acme_account())
        if kv is None:
            return None
        try:
            obj = json.loads(kv.value)
            return Account(str(obj["directory"]), str(obj["url"]), str(obj["key_sealed"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.FailedPrecondition(f"the stored ACME account is damaged: {exc}") from exc

    async def put_account(self, directory: str, url: str, key: bytes, sealer: Sealer) -> None:
        record = {"directory": directory, "url": url, "key_sealed": sealer.seal(key)}
        await self.etcd.put(self.keys.acme_account(), json.dumps(record).encode())
