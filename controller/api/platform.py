"""PlatformService: the client-facing API, a thin layer over controller.store.state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TypeAlias

import grpc

from controller.api import convert
from controller.api.accounts_api import AccountRPCs
from controller.api.addons_api import AddonRPCs
from controller.api.auth import Access
from controller.api.backups_api import BackupRPCs
from controller.api.build_api import BuildRPCs, BuildServices
from controller.api.cron_api import CronRPCs
from controller.api.domains_api import DomainRPCs
from controller.api.drains_api import DrainRPCs
from controller.api.endpoint import unary
from controller.api.logs_api import LogRPCs
from controller.api.run_api import RunService
from controller.api.teams_api import TeamRPCs
from controller.bus.addon_provider import ProviderClient
from controller.bus.apilog import ApiLog, release_lines, restart_line, scale_line
from controller.bus.logs import LogHub
from controller.core import access, validation
from controller.core.access import Identity
from controller.core.transitions import ScaleChange
from controller.store.acme import AcmeStore
from controller.store.addons import Addons
from controller.store.audit import AuditTrail
from controller.store.cron import Jobs
from controller.store.domains import Domains
from controller.store.drains import Drains
from controller.store.dynos import Dynos
from controller.store.state import State
from slipway.clock import Clock, SystemClock
from slipway.sealing import Sealer
from slipway.v1 import platform_pb2 as pb
from slipway.v1 import platform_pb2_grpc

Ctx: TypeAlias = grpc.aio.ServicerContext


class PlatformAPI(
    AccountRPCs,
    TeamRPCs,
    BuildRPCs,
    LogRPCs,
    DrainRPCs,
    DomainRPCs,
    CronRPCs,
    AddonRPCs,
    BackupRPCs,
    platform_pb2_grpc.PlatformServiceServicer,
):
    def __init__(
        self,
        state: State,
        access: Access,
        audit: AuditTrail | None = None,
        *,
        app_url: Callable[[str], str] = lambda app: "",
        base_domain: str = "localhost",
        sealer: Sealer | None = None,
        builds: BuildServices | None = None,
        log_hub: LogHub | None = None,
        api_log: ApiLog | None = None,
        clock: Clock = SystemClock(),
    ) -> None:
        self.clock = clock
        self.state = state
        self.access = access
        self.audit = audit
        self.accounts = access.accounts
        self.app_url = app_url
        self.dynos = Dynos(state)
        self.drains = Drains(state)
        # Custom domains and uploaded certificates (keys sealed with ``sealer``).
        self.domains = Domains(state, base_domain, sealer)
        self.acme = AcmeStore(state)
        self.acme_wake: Callable[[], None] | None = None
        self.addons = Addons(state)
        self.jobs = Jobs(state)
        self.addons_wake: Callable[[], None] = lambda: None
        # Called after an app is created or destroyed (the edge certificates look again).
        self.apps_changed: Callable[[], None] = lambda: None
        self.addon_provider = ProviderClient()
        # Build RPCs (controller/api/build_api.py); None when builds are not wired.
        self.build_services = builds
        # Logs (controller/api/logs_api.py) and the api lines changes leave in the app's log.
        self.log_hub = log_hub
        self.api_log = api_log
        # The leader's reconcile pass count (set by the server), shown by ListNodes.
        self.reconcile_passes: Callable[[], int] = lambda: 0

    def _log(self, app: str, *messages: str) -> None:
        if self.api_log is not None:
            self.api_log.emit(app, *messages)

    # apps

    @unary
    async def CreateApp(
        self, request: pb.CreateAppRequest, context: Ctx, who: Identity
    ) -> pb.CreateAppResponse:
        team = request.team and validation.team_name(request.team)
        record = await self.state.create_app(request.name or None, owner=who.user, team=team)
        if team and who.user:
            # As on Heroku, whoever makes a team's app may manage it, whatever
            # their role in the team.
            await self.accounts.set_collaborator(
                record, who.user, access.ALL_PERMISSIONS, by="created the app", new=True
            )
        self.apps_changed()
        return pb.CreateAppResponse(app=convert.app(record, self.app_url(record.name)))

    @unary
    async def ListApps(
        self, request: pb.ListAppsRequest, context: Ctx, who: Identity
    ) -> pb.ListAppsResponse:
        apps = await self.state.list_apps()
        if request.team:
            apps = [a for a in apps if a.team == request.team]
        if not who.admin:
            apps = await self.accounts.visible_apps(who.user, apps)
        return pb.ListAppsResponse(apps=[convert.app(a, self.app_url(a.name)) for a in apps])

    @unary
    async def GetApp(
        self, request: pb.GetAppRequest, context: Ctx, who: Identity
    ) -> pb.GetAppResponse:
        record = await self.state.get_app(request.app)
        formation, process_types = await self.state.get_formation(request.app)
        response = pb.GetAppResponse(
            app=convert.app(record, self.app_url(record.name)),
            formation=convert.formation(formation, process_types),
        )
        if record.current_release:
            response.release.CopyFrom(
                convert.release(await self.state.get_release(request.app, record.current_release))
            )
        return response

    @unary
    async def DestroyApp(
        self, request: pb.DestroyAppRequest, context: Ctx, who: Identity
    ) -> pb.DestroyAppResponse:
        await self.state.destroy_app(request.app, request.confirm)
        self.app_destroyed(request.app)
        self.apps_changed()
        return pb.DestroyAppResponse()

    # config vars

    @unary
    async def GetConfigVars(
        self, request: pb.GetConfigVarsRequest, context: Ctx, who: Identity
    ) -> pb.GetConfigVarsResponse:
        return pb.GetConfigVarsResponse(config=await self.state.get_config(request.app))

    @unary
    async def GetConfigVarNames(
        self, request: pb.GetConfigVarNamesRequest, context: Ctx, who: Identity
    ) -> pb.GetConfigVarNamesResponse:
        return pb.GetConfigVarNamesResponse(names=sorted(await self.state.get_config(request.app)))

    @unary
    async def UpdateConfigVars(
        self, request: pb.UpdateConfigVarsRequest, context: Ctx, who: Identity
    ) -> pb.UpdateConfigVarsResponse:
        config, release = await self.state.update_config(
            request.app, dict(request.set), list(request.unset), who.actor
        )
        self._log(request.app, *release_lines(release, who.actor))
        return pb.UpdateConfigVarsResponse(config=config, release=convert.release(release))

    # releases

    @unary
    async def ListReleases(
        self, request: pb.ListReleasesRequest, context: Ctx, who: Identity
    ) -> pb.ListReleasesResponse:
        releases = await self.state.list_releases(request.app, request.limit)
        return pb.ListReleasesResponse(releases=[convert.release(r) for r in releases])

    @unary
    async def GetRelease(
        self, request: pb.GetReleaseRequest, context: Ctx, who: Identity
    ) -> pb.GetReleaseResponse:
        release = await self.state.get_release(request.app, request.version)
        return pb.GetReleaseResponse(release=convert.release(release))

    @unary
    async def RollbackRelease(
        self, request: pb.RollbackReleaseRequest, context: Ctx, who: Identity
    ) -> pb.RollbackReleaseResponse:
        release = await self.state.rollback(request.app, request.version, who.actor)
        self._log(request.app, *release_lines(release, who.actor))
        return pb.RollbackReleaseResponse(release=convert.release(release))

    @unary
    async def CreateRelease(
        self, request: pb.CreateReleaseRequest, context: Ctx, who: Identity
    ) -> pb.CreateReleaseResponse:
        # As in a Procfile (and Heroku's slug API), a "release" entry is the release
        # command, not a process type: the release waits for it to succeed.
        process_types = dict(request.process_types)
        release_command = process_types.pop("release", "")
        release = await self.state.create_release(
            request.app,
            convert.slug_from(request.slug),
            process_types,
            request.description,
            who.actor,
            release_command=release_command,
        )
        self._log(request.app, *release_lines(release, who.actor))
        return pb.CreateReleaseResponse(release=convert.release(release))

    # formation

    @unary
    async def GetFormation(
        self, request: pb.GetFormationRequest, context: Ctx, who: Identity
    ) -> pb.GetFormationResponse:
        formation, process_types = await self.state.get_formation(request.app)
        return pb.GetFormationResponse(formation=convert.formation(formation, process_types))

    @unary
    async def ScaleFormation(
        self, request: pb.ScaleFormationRequest, context: Ctx, who: Identity
    ) -> pb.ScaleFormationResponse:
        changes = [
            ScaleChange(
                type=c.type,
                quantity=c.quantity if c.HasField("quantity") else None,
                delta=c.delta if c.HasField("delta") else None,
                size=c.size,
            )
            for c in request.changes
        ]
        formation = await self.state.scale(request.app, changes)
        self._log(request.app, scale_line(formation, who.actor))
        _, process_types = await self.state.get_formation(request.app)
        return pb.ScaleFormationResponse(formation=convert.formation(formation, process_types))

    @unary
    async def ListSizes(
        self, request: pb.ListSizesRequest, context: Ctx, who: Identity
    ) -> pb.ListSizesResponse:
        return pb.ListSizesResponse(sizes=[convert.size(s) for s in self.state.sizes.all()])

    # dynos and nodes

    @unary
    async def ListDynos(
        self, request: pb.ListDynosRequest, context: Ctx, who: Identity
    ) -> pb.ListDynosResponse:
        views = await self.dynos.list_dynos(request.app)
        return pb.ListDynosResponse(dynos=[convert.dyno(v) for v in views])

    @unary
    async def RestartDynos(
        self, request: pb.RestartDynosRequest, context: Ctx, who: Identity
    ) -> pb.RestartDynosResponse:
        restarted = await self.dynos.restart(request.app, request.target)
        self._log(request.app, restart_line(request.target, who.actor))
        return pb.RestartDynosResponse(restarted=restarted)

    @unary
    async def StopDyno(
        self, request: pb.StopDynoRequest, context: Ctx, who: Identity
    ) -> pb.StopDynoResponse:
        stopped = await self.dynos.stop(request.app, request.dyno)
        self._log(request.app, f"Stop {request.dyno} by {who.actor}")
        return pb.StopDynoResponse(stopped=stopped)

    @unary
    async def ListNodes(
        self, request: pb.ListNodesRequest, context: Ctx, who: Identity
    ) -> pb.ListNodesResponse:
        return pb.ListNodesResponse(
            nodes=[convert.node(v) for v in await self.dynos.nodes()],
            reconcile_passes=self.reconcile_passes(),
        )

    @unary
    async def DrainNode(
        self, request: pb.DrainNodeRequest, context: Ctx, who: Identity
    ) -> pb.DrainNodeResponse:
        remaining = await self.dynos.drain(request.node, undrain=request.undrain)
        return pb.DrainNodeResponse(remaining_dynos=remaining)

    # one-off dynos (controller/api/run_api.py; set by the server)

    run_service: RunService | None = None

    async def RunDyno(
        self, request_iterator: AsyncIterator[pb.RunDynoRequest], context: Ctx
    ) -> AsyncIterator[pb.RunDynoResponse]:
        if self.run_service is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "one-off dynos are not wired")
            return
        async for response in self.run_service.run_dyno(request_iterator, context):
            yield response
