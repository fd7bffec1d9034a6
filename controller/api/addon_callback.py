"""The callback API providers use after answering a provision with 202 (HTTPS).

Heroku's partner API has providers finish asynchronous provisioning through the
platform API; these are the same two calls, at the ``callback_url`` each
provision request carries (``{base}/addons/{uuid}``):

    PATCH {callback_url}/config               {"config": [{"name", "value"}, ...]}
    POST  {callback_url}/actions/provision    marks the add-on provisioned
    GET   {callback_url}                      {id, name, state, plan}

The provider authenticates as it is authenticated by us: Basic auth with its
manifest's id and password, and may touch only add-ons of its own service.
Served with the controller's certificate from the cluster CA; every controller
serves it (the leader's loop sees the change through etcd).
"""

from __future__ import annotations

import hmac
import json
import re
import ssl
from collections.abc import Callable

from controller.core import addons as core
from controller.core.addons import AddonRecord
from controller.store.addons import Addons
from slipway import errors, http1
from slipway import log as slog

log = slog.get("controller.addons.callback")

_PATH = re.compile(r"^/addons/([0-9a-f-]{36})(/config|/actions/provision)?/?$")


class CallbackServer(http1.JsonServer):
    def __init__(
        self,
        addons: Addons,
        listen: str,
        context: ssl.SSLContext | None,
        *,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(listen, context, self.handle)
        self.addons = addons
        self.on_change = on_change
        self.label = "add-on callbacks"

    async def handle(self, request: http1.Request) -> tuple[int, bytes]:
        match = _PATH.match(request.path.partition("?")[0])
        if not match:
            return 404, http1.error_body("not_found", "no such resource")
        addon_id, action = match.group(1), match.group(2) or ""
        addon = await self.addons.get(addon_id)
        if addon is None or not await self._authentic(addon, request):
            # The same answer for both: a provider learns nothing of other services' add-ons.
            return 401, http1.error_body("unauthorized", "wrong credentials for this add-on")
        try:
            if action == "" and request.method == "GET":
                return 200, _addon_body(addon)
            if action == "/config" and request.method == "PATCH":
                return await self._config(addon, request.body)
            if action == "/actions/provision" and request.method == "POST":
                return await self._provisioned(addon)
        except errors.SlipwayError as exc:
            return http1.status_of(exc), http1.error_body(exc.reason or "invalid", exc.message)
        return 405, http1.error_body("method_not_allowed", f"{request.method} is not served here")

    async def _authentic(self, addon: AddonRecord, request: http1.Request) -> bool:
        creds = http1.parse_basic_auth(request.headers.get("authorization", ""))
        if creds is None:
            return False
        try:
            service = await self.addons.service(addon.service)
        except errors.NotFound:
            return False
        user_ok = hmac.compare_digest(creds[0].encode(), service.name.encode())
        password_ok = hmac.compare_digest(creds[1].encode(), service.password.encode())
        return user_ok and password_ok

    async def _config(self, addon: AddonRecord, body: bytes) -> tuple[int, bytes]:
        try:
            doc = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise errors.InvalidArgument("the body is not JSON") from None
        if not isinstance(doc, dict) or "config" not in doc:
            raise errors.InvalidArgument('the body must be {"config": [{"name", "value"}]}')
        delivered = core.provider_config(doc["config"])

        def change(current: AddonRecord) -> AddonRecord | None:
            if current.state not in (core.PROVISIONING, core.PROVISIONED):
                raise errors.FailedPrecondition(
                    f"the add-on is {current.state}", reason="addon_state"
                )
            return core.with_config(current, {**current.config, **delivered})

        fresh = await self.addons.update(addon.id, change)
        self.on_change()
        log.info("add-on config delivered", addon=addon.name, vars=sorted(delivered))
        config = (fresh or addon).config
        return 200, json.dumps([{"name": k, "value": v} for k, v in config.items()]).encode()

    async def _provisioned(self, addon: AddonRecord) -> tuple[int, bytes]:
        def change(current: AddonRecord) -> AddonRecord | None:
            if current.state == core.PROVISIONED:
                return current  # delivered twice: at least once is the contract
            if current.state != core.PROVISIONING:
                raise errors.FailedPrecondition(
                    f"the add-on is {current.state}", reason="addon_state"
                )
            return core.provisioned(current, {}, self.addons.clock.now())

        fresh = await self.addons.update(addon.id, change)
        self.on_change()
        log.info("add-on provisioned by callback", addon=addon.name)
        return 200, _addon_body(fresh or addon)


def _addon_body(addon: AddonRecord) -> bytes:
    return json.dumps(
        {"id": addon.id, "name": addon.name, "state": addon.state, "plan": addon.plan}
    ).encode()
