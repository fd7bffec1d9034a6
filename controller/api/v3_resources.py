"""The Platform API's resources: each route is PlatformService calls and a shape."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from controller.api import v3_shapes as shapes
from controller.api.v3_http import ApiError, Call, Reply, page_reply
from slipway.v1 import platform_pb2 as pb

if TYPE_CHECKING:
    from controller.api.v3_http import PlatformV3


async def _app_name(call: Call) -> str:
    """The app a URL names, by name or by id."""
    given = call.params["app"]
    if len(given) == 36 and given.count("-") == 4:
        for listed in (await call.rpc("ListApps", pb.ListAppsRequest())).apps:
            if listed.id == given:
                return str(listed.name)
        raise ApiError(404, "not_found", "Couldn't find that app.")
    return given


async def get_account(call: Call) -> Reply:
    return Reply(200, shapes.account(await call.rpc("WhoAmI", pb.WhoAmIRequest())))


async def list_apps(call: Call) -> Reply:
    apps = [shapes.app(a) for a in (await call.rpc("ListApps", pb.ListAppsRequest())).apps]
    return page_reply(apps, call, ("name", "id", "created_at"))


async def create_app(call: Call) -> Reply:
    team = call.body.get("team") or call.body.get("organization") or ""
    if isinstance(team, dict):
        team = team.get("name", "")
    if not isinstance(team, str):
        raise ApiError(422, "invalid_params", "team must be a team's name")
    created = await call.rpc("CreateApp", pb.CreateAppRequest(name=call.text("name"), team=team))
    return Reply(201, shapes.app(created.app))


async def get_app(call: Call) -> Reply:
    got = await call.rpc("GetApp", pb.GetAppRequest(app=await _app_name(call)))
    return Reply(200, shapes.app(got.app))


async def delete_app(call: Call) -> Reply:
    name = await _app_name(call)
    got = await call.rpc("GetApp", pb.GetAppRequest(app=name))
    await call.rpc("DestroyApp", pb.DestroyAppRequest(app=name, confirm=name))
    return Reply(200, shapes.app(got.app))


async def get_config(call: Call) -> Reply:
    got = await call.rpc("GetConfigVars", pb.GetConfigVarsRequest(app=await _app_name(call)))
    return Reply(200, dict(got.config))


async def update_config(call: Call) -> Reply:
    values: dict[str, str] = {}
    unset: list[str] = []
    for key, value in call.body.items():
        if value is None:
            unset.append(key)
        elif isinstance(value, str | int | float | bool):
            values[key] = value if isinstance(value, str) else str(value).lower()
        else:
            raise ApiError(422, "invalid_params", f"config var {key} must be a string or null")
    request = pb.UpdateConfigVarsRequest(app=await _app_name(call), set=values, unset=unset)
    return Reply(200, dict((await call.rpc("UpdateConfigVars", request)).config))


async def list_domains(call: Call) -> Reply:
    got = await call.rpc("ListDomains", pb.ListDomainsRequest(app=await _app_name(call)))
    return page_reply([shapes.domain(d) for d in got.domains], call, ("hostname", "id"))


async def create_domain(call: Call) -> Reply:
    hostname = call.text("hostname")
    if not hostname:
        raise ApiError(422, "invalid_params", "hostname is required")
    request = pb.AddDomainRequest(app=await _app_name(call), hostname=hostname)
    return Reply(201, shapes.domain((await call.rpc("AddDomain", request)).domain))


async def get_domain(call: Call) -> Reply:
    request = pb.GetDomainRequest(app=await _app_name(call), hostname=call.params["domain"])
    return Reply(200, shapes.domain((await call.rpc("GetDomain", request)).domain))


async def delete_domain(call: Call) -> Reply:
    request = pb.RemoveDomainRequest(app=await _app_name(call), hostname=call.params["domain"])
    return Reply(200, shapes.domain((await call.rpc("RemoveDomain", request)).domain))


async def list_releases(call: Call) -> Reply:
    name = await _app_name(call)
    got = await call.rpc("ListReleases", pb.ListReleasesRequest(app=name))
    app = await call.rpc("GetApp", pb.GetAppRequest(app=name))
    current = app.app.current_release
    items: list[dict[str, Any]] = [shapes.release(r, current) for r in got.releases]
    return page_reply(items, call, ("version", "id"))


async def list_formation(call: Call) -> Reply:
    name = await _app_name(call)
    got = await call.rpc("GetFormation", pb.GetFormationRequest(app=name))
    return page_reply([shapes.formation(name, f) for f in got.formation], call, ("type", "id"))


async def get_formation(call: Call) -> Reply:
    name = await _app_name(call)
    got = await call.rpc("GetFormation", pb.GetFormationRequest(app=name))
    for entry in got.formation:
        if entry.type == call.params["type"]:
            return Reply(200, shapes.formation(name, entry))
    raise ApiError(404, "not_found", f"Couldn't find that process type ({call.params['type']}).")


async def _scale(call: Call, changes: list[pb.FormationChange]) -> list[dict[str, Any]]:
    name = await _app_name(call)
    request = pb.ScaleFormationRequest(app=name, changes=changes)
    got = await call.rpc("ScaleFormation", request)
    wanted = {c.type for c in changes}
    return [shapes.formation(name, f) for f in got.formation if f.type in wanted]


async def update_formations(call: Call) -> Reply:
    updates = call.body.get("updates")
    if not isinstance(updates, list) or not updates:
        raise ApiError(422, "invalid_params", "updates must be a list of {type, quantity, size}")
    changes = []
    for update in updates:
        if not isinstance(update, dict) or not isinstance(update.get("type"), str):
            raise ApiError(422, "invalid_params", "each update needs a type")
        changes.append(
            shapes.quantity_change(update["type"], update.get("quantity"), update.get("size"))
        )
    return Reply(200, await _scale(call, changes))


async def update_formation(call: Call) -> Reply:
    change = shapes.quantity_change(
        call.params["type"], call.body.get("quantity"), call.body.get("size")
    )
    updated = await _scale(call, [change])
    if not updated:
        raise ApiError(404, "not_found", f"Couldn't find that process type ({change.type}).")
    return Reply(200, updated[0])


async def list_dynos(call: Call) -> Reply:
    got = await call.rpc("ListDynos", pb.ListDynosRequest(app=await _app_name(call)))
    return page_reply([shapes.dyno(d) for d in got.dynos], call, ("name", "id"))


async def get_dyno(call: Call) -> Reply:
    got = await call.rpc("ListDynos", pb.ListDynosRequest(app=await _app_name(call)))
    for d in got.dynos:
        if call.params["dyno"] in (d.name, d.instance_id):
            return Reply(200, shapes.dyno(d))
    raise ApiError(404, "not_found", f"Couldn't find that dyno ({call.params['dyno']}).")


async def restart_dynos(call: Call) -> Reply:
    target = call.params.get("dyno", "")
    request = pb.RestartDynosRequest(app=await _app_name(call), target=target)
    await call.rpc("RestartDynos", request)
    return Reply(202, {})


async def stop_dyno(call: Call) -> Reply:
    request = pb.StopDynoRequest(app=await _app_name(call), dyno=call.params["dyno"])
    await call.rpc("StopDyno", request)
    return Reply(202, {})


def register(api: PlatformV3) -> None:
    api.route("GET", "/account", get_account)
    api.route("GET", "/apps", list_apps)
    api.route("POST", "/apps", create_app)
    api.route("GET", "/apps/{app}", get_app)
    api.route("DELETE", "/apps/{app}", delete_app)
    api.route("GET", "/apps/{app}/config-vars", get_config)
    api.route("PATCH", "/apps/{app}/config-vars", update_config)
    api.route("GET", "/apps/{app}/domains", list_domains)
    api.route("POST", "/apps/{app}/domains", create_domain)
    api.route("GET", "/apps/{app}/domains/{domain}", get_domain)
    api.route("DELETE", "/apps/{app}/domains/{domain}", delete_domain)
    api.route("GET", "/apps/{app}/releases", list_releases)
    api.route("GET", "/apps/{app}/formation", list_formation)
    api.route("PATCH", "/apps/{app}/formation", update_formations)
    api.route("GET", "/apps/{app}/formation/{type}", get_formation)
    api.route("PATCH", "/apps/{app}/formation/{type}", update_formation)
    api.route("GET", "/apps/{app}/dynos", list_dynos)
    api.route("DELETE", "/apps/{app}/dynos", restart_dynos)
    api.route("GET", "/apps/{app}/dynos/{dyno}", get_dyno)
    api.route("DELETE", "/apps/{app}/dynos/{dyno}", restart_dynos)
    api.route("POST", "/apps/{app}/dynos/{dyno}/actions/stop", stop_dyno)
