"""The leader's add-on loop: provider requests, attachment releases, clean-up.

Level-based: each pass reads every add-on, attachment and app, plans with
``controller.core.addons.plan_work`` (pure) and applies the plan. Nothing is
remembered between passes, so a new leader carries on where a dead one
stopped; a provision request sent twice carries the same uuid, which providers
are bound to treat as one resource.

An answer is recorded only if the add-on is still in the state the request was
made for (``addons:destroy`` during a provision wins; the provider's id is kept
so the DELETE reaches the right resource).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

from controller.bus.addon_provider import ProviderClient
from controller.core import addons as core
from controller.core.addons import AddonRecord, AddonWork, Answer, Call
from controller.loops.leader import Leadership
from controller.store.addons import Addons
from slipway import errors
from slipway import log as slog
from slipway.clock import Clock, SystemClock

log = slog.get("controller.addons")
T = TypeVar("T")

# Provider requests in flight at once: one slow provider must not hold up the others.
MAX_CONCURRENT_CALLS = 8


class AddonLoop:
    def __init__(
        self,
        addons: Addons,
        leadership: Leadership,
        provider: ProviderClient,
        *,
        callback_base: Callable[[], str],
        tick: float = 5.0,
        async_deadline: float = core.ASYNC_DEADLINE_SECONDS,
        clock: Clock = SystemClock(),
    ) -> None:
        self.addons = addons
        self.leadership = leadership
        self.provider = provider
        self.callback_base = callback_base
        self.tick = tick
        self.async_deadline = async_deadline
        self.clock = clock
        self.passes = 0
        self._wake = asyncio.Event()
        self._calls = asyncio.Semaphore(MAX_CONCURRENT_CALLS)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        await self.leadership.run_while_leading(
            "addons", self.pass_once, wake=self._wake, every=self.tick
        )

    def callback_url(self, addon_id: str) -> str:
        return f"{self.callback_base().rstrip('/')}/addons/{addon_id}"

    async def pass_once(self) -> AddonWork:
        """One load -> plan -> apply; passes again at once while work remains due."""
        while True:
            work = await self._pass()
            self.passes += 1
            if work.empty or not self.leadership.is_leader:
                return work

    async def _pass(self) -> AddonWork:
        apps = {a.name for a in await self.addons.state.list_apps()}
        services = {s.name: s for s in await self.addons.services()}
        addons = await self.addons.all_addons()
        attachments = await self.addons.attachments()
        if self.leadership.is_leader:
            # Before any release: a dyno given DATABASE_URL finds the firewall open.
            changed = await self.addons.publish_grants(
                core.network_grants(services.values(), addons, attachments)
            )
            if changed:
                log.info("add-on network grants changed", apps=changed)
        now = self.clock.now()
        work = core.plan_work(
            addons,
            attachments,
            apps,
            {name: s.config_vars_prefix for name, s in services.items()},
            now,
            async_deadline=self.async_deadline,
        )
        if work.empty or not self.leadership.is_leader:
            return work
        for addon_id in work.orphaned:
            fresh = await self.addons.update(
                addon_id,
                lambda a: a if a.state == core.DEPROVISIONING else core.deprovision(a),
            )
            if fresh is not None:
                log.info("add-on of a destroyed app deprovisioned", addon=fresh.name, app=fresh.app)
        for addon_id in work.expired:
            await self.addons.update(addon_id, self._expire)
        for app, name in work.detach:
            await self._quietly("detach", app, self.addons.detach(app, name))
        for app, name in work.sync:
            release = await self._quietly("sync", app, self.addons.sync(app, name))
            if release is not None:
                log.info(
                    "add-on config released", app=app, attachment=name, version=release.version
                )
        by_id = {a.id: a for a in addons}
        async with asyncio.TaskGroup() as tg:
            for addon_id, call in work.calls:
                tg.create_task(self._call(by_id[addon_id], services[by_id[addon_id].service], call))
        # Provider answers change records the next pass acts on (a release, a delete).
        return work if work.calls or work.orphaned else AddonWork()

    def _expire(self, addon: AddonRecord) -> AddonRecord | None:
        if not core.async_expired(addon, self.clock.now(), self.async_deadline):
            return addon
        hours = self.async_deadline / 3600
        return replace(
            addon,
            state=core.FAILED,
            accepted_at=0.0,
            error=f"the provider accepted the add-on but did not deliver it within {hours:g} h",
        )

    async def _quietly(self, what: str, app: str, step: Awaitable[T]) -> T | None:
        try:
            return await step
        except errors.SlipwayError as exc:
            # Left for the next pass: the records say what is still to do.
            log.warning("add-on step failed", step=what, app=app, error=exc.message)
            return None

    async def _call(self, addon: AddonRecord, service: core.ServiceRecord, call: Call) -> None:
        async with self._calls:
            if call is Call.PROVISION:
                answer = await self.provider.provision(service, addon, self.callback_url(addon.id))
            elif call is Call.CHANGE_PLAN:
                answer = await self.provider.change_plan(service, addon)
            else:
                answer = await self.provider.deprovision(service, addon)
        log.info(
            "add-on provider answered",
            addon=addon.name,
            call=str(call),
            outcome=str(answer.outcome),
            message=answer.message,
        )
        await self.addons.update(
            addon.id, lambda current: self._record(current, addon, call, answer)
        )

    def _record(
        self, current: AddonRecord, asked: AddonRecord, call: Call, answer: Answer
    ) -> AddonRecord | None:
        now = self.clock.now()
        if current.state != asked.state or current.plan != asked.plan:
            # Moved on meanwhile (destroyed, retried, another plan): keep only what
            # identifies the provider's resource.
            if answer.provider_id and not current.provider_id:
                return replace(current, provider_id=answer.provider_id)
            return current
        return core.after_answer(current, call, answer, now)
