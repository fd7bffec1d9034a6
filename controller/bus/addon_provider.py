"""Requests to add-on providers in the shape of Heroku's add-on partner API v3.

    provision     POST   {base_url}        {uuid, name, plan, options, callback_url, region}
                  200/201 {id, config, message}: done; 202 {id, message}: the config
                  comes later through the callback API (controller/api/addon_callback.py)
    plan change   PUT    {base_url}/{id}   {plan, uuid}  200 {config?, message?}
    deprovision   DELETE {base_url}/{id}   2xx; 404 and 410 mean it is gone already
    details       GET    {base_url}/{id}   200 {...}: what the provider tells (Slipway's
                  built-in services; not in Heroku's API, so others may answer 404)
    action        POST   {base_url}/{id}/actions/{action}  {uuid, argument}
                  200 {config?, message}

Every request carries ``Authorization: Basic`` with the manifest's id and
password. Answers become :class:`controller.core.addons.Answer`: a 4xx is the
provider refusing (its ``message`` is what the user sees), a 5xx, 408, 429, a
timeout or an unreadable body is worth retrying.
"""

from __future__ import annotations

import json
import ssl

from controller.core.addons import AddonRecord, Answer, Outcome, ServiceRecord, provider_config
from slipway import errors, http1
from slipway import log as slog

log = slog.get("controller.addons")

REQUEST_TIMEOUT = 30.0
_RETRYABLE = {408, 425, 429}


class ProviderClient:
    def __init__(self, *, region: str = "local", timeout: float = REQUEST_TIMEOUT) -> None:
        self.region = region
        self.timeout = timeout

    def _context(self, service: ServiceRecord) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if service.ca_pem:
            context.load_verify_locations(cadata=service.ca_pem)
        return context

    async def _call(
        self, service: ServiceRecord, method: str, url: str, body: dict[str, object] | None
    ) -> http1.Response | Answer:
        headers = {
            "Authorization": http1.basic_auth(service.name, service.password),
            "Accept": "application/vnd.heroku-addons+json; version=3",
        }
        data = b""
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            return await http1.request(
                method,
                url,
                headers=headers,
                body=data,
                context=self._context(service),
                timeout=self.timeout,
            )
        except http1.HttpError as exc:
            return Answer(Outcome.RETRY, message=str(exc))

    async def provision(
        self, service: ServiceRecord, addon: AddonRecord, callback_url: str
    ) -> Answer:
        body: dict[str, object] = {
            "uuid": addon.id,
            "name": addon.name,
            "plan": addon.plan,
            "options": addon.options,
            "callback_url": callback_url,
            "region": self.region,
            "heroku_id": addon.app,
        }
        got = await self._call(service, "POST", service.base_url, body)
        return got if isinstance(got, Answer) else _answer(got, accept_202=True)

    async def change_plan(self, service: ServiceRecord, addon: AddonRecord) -> Answer:
        url = f"{service.base_url}/{addon.provider_id or addon.id}"
        got = await self._call(service, "PUT", url, {"plan": addon.plan, "uuid": addon.id})
        return got if isinstance(got, Answer) else _answer(got)

    async def deprovision(self, service: ServiceRecord, addon: AddonRecord) -> Answer:
        url = f"{service.base_url}/{addon.provider_id or addon.id}"
        got = await self._call(service, "DELETE", url, None)
        if isinstance(got, Answer):
            return got
        if got.status in (404, 410):
            return Answer(Outcome.DONE, message="the provider no longer has it")
        return _answer(got)

    async def details(self, service: ServiceRecord, addon: AddonRecord) -> dict[str, object]:
        """The provider's account of the resource; raises what the user should read."""
        url = f"{service.base_url}/{addon.provider_id or addon.id}"
        got = await self._call(service, "GET", url, None)
        if isinstance(got, Answer):
            raise errors.Unavailable(f"{service.name} did not answer: {got.message}")
        doc = _json(got.body)
        if got.status in (404, 405, 501):
            raise errors.FailedPrecondition(
                f"{service.name} tells nothing more of its add-ons than `slipway addons:info`",
                reason="no_details",
            )
        if got.status != 200 or not isinstance(doc, dict):
            message = doc.get("message", "") if isinstance(doc, dict) else ""
            raise errors.Unavailable(f"{service.name} answered {got.status} {message}".strip())
        return doc

    async def backup_chunk(
        self, service: ServiceRecord, addon: AddonRecord, backup: str, offset: int, length: int
    ) -> bytes:
        """Bytes of one of the add-on's backups (a Slipway extension the built-in
        postgresql serves); raises what the user should read."""
        url = (
            f"{service.base_url}/{addon.provider_id or addon.id}/backups/{backup}"
            f"?offset={offset}&length={length}"
        )
        got = await self._call(service, "GET", url, None)
        if isinstance(got, Answer):
            raise errors.Unavailable(f"{service.name} did not answer: {got.message}")
        if got.status == 200:
            return got.body
        doc = _json(got.body)
        message = str(doc.get("message", "")) if isinstance(doc, dict) else ""
        if got.status == 404:
            raise errors.NotFound(message or f"{service.name} has no backup {backup}")
        raise errors.Unavailable(f"{service.name} answered {got.status} {message}".strip())

    async def action(
        self, service: ServiceRecord, addon: AddonRecord, action: str, argument: str = ""
    ) -> Answer:
        url = f"{service.base_url}/{addon.provider_id or addon.id}/actions/{action}"
        got = await self._call(service, "POST", url, {"uuid": addon.id, "argument": argument})
        return got if isinstance(got, Answer) else _answer(got)


def _answer(response: http1.Response, *, accept_202: bool = False) -> Answer:
    status = response.status
    doc = _json(response.body)
    message = str(doc.get("message", "")) if isinstance(doc, dict) else ""
    if status >= 500 or status in _RETRYABLE:
        return Answer(Outcome.RETRY, message=f"the provider answered {status}: {message}".strip())
    if status >= 400:
        if not message:
            message = f"the provider refused with {status}"
        return Answer(Outcome.REFUSED, message=message)
    if status < 200 or status >= 300:
        return Answer(Outcome.RETRY, message=f"unexpected answer {status}")
    if not isinstance(doc, dict):
        doc = {}
    provider_id = str(doc.get("id", "") or "")
    if status == 202 and accept_202:
        return Answer(Outcome.ACCEPTED, provider_id=provider_id, message=message)
    config = None
    if doc.get("config") is not None:
        try:
            config = provider_config(doc["config"])
        except errors.InvalidArgument as exc:
            return Answer(Outcome.REFUSED, message=f"the provider's config is unusable: {exc}")
    return Answer(Outcome.DONE, provider_id=provider_id, config=config, message=message)


def _json(body: bytes) -> object:
    if not body:
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
