"""Log drains in etcd: add, list, remove (any controller; the pool sends them)."""

from __future__ import annotations

from controller.core.drains import MAX_DRAINS_PER_APP, DrainRecord, parse_url, shown_url
from controller.store.state import State
from slipway import errors


class Drains:
    def __init__(self, state: State) -> None:
        self.state = state
        self.etcd = state.etcd
        self.keys = state.keys

    async def list(self, app: str) -> list[DrainRecord]:
        await self.state.get_app(app)
        kvs, _ = await self.etcd.get_prefix(self.keys.log_drains(app))
        return sorted((DrainRecord.decode(kv.value) for kv in kvs), key=lambda d: d.created_at)

    async def add(self, app: str, url: str, start_after: int) -> DrainRecord:
        """A new drain of ``app``'s lines logged after stream sequence ``start_after``."""
        parse_url(url)
        existing = await self.list(app)
        if any(d.url == url for d in existing):
            raise errors.AlreadyExists(f"{app} already drains to {shown_url(url)}")
        if len(existing) >= MAX_DRAINS_PER_APP:
            raise errors.ResourceExhausted(
                f"{app} has {len(existing)} drains, the most an app may have; remove one first"
            )
        record = DrainRecord.new(app, url, start_after)
        if not await self.etcd.create(self.keys.log_drain(app, record.id), record.encode()):
            raise errors.Conflict("the drain was added twice at once; try again")
        return record

    async def remove(self, app: str, url_or_token: str) -> DrainRecord:
        for drain in await self.list(app):
            if url_or_token in (drain.url, drain.token, drain.id, shown_url(drain.url)):
                await self.etcd.delete(self.keys.log_drain(app, drain.id))
                return drain
        raise errors.NotFound(f"{app} has no drain {shown_url(url_or_token)!r}; see `drains`")
