"""A typed client for PlatformService: auth metadata, deadlines, failover, errors.

Statuses come back as :mod:`slipway.errors` classes carrying the server's
message, so callers (the CLI) print a sentence, not a traceback. With several
controller addresses the client tries the next one when a controller is
unreachable; every call has a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from slipway import errors, tls
from slipway.backoff import Backoff
from slipway.v1 import platform_pb2 as pb
from slipway.v1 import platform_pb2_grpc

T = TypeVar("T")
DEFAULT_TIMEOUT = 15.0
# Calls the controller passes on to an add-on provider (whose own deadline is 30 s).
PROVIDER_CALL_TIMEOUT = 45.0
UPLOAD_CHUNK = 512 * 1024  # under the 1 MB per message the server accepts
# Statuses that mean "this controller, not the request": try another one.
_FAILOVER = {grpc.StatusCode.UNAVAILABLE}


def split_addresses(api: str | Sequence[str]) -> list[str]:
    parts = api.split(",") if isinstance(api, str) else list(api)
    addresses = [p.strip().removeprefix("grpc://") for p in parts if p.strip()]
    if not addresses:
        raise errors.InvalidArgument("no controller address given")
    return addresses


class Client:
    """``ca_file``: speak TLS and check the controller's certificate against this
    cluster CA; None: plaintext."""

    def __init__(
        self,
        api: str | Sequence[str],
        token: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ca_file: Path | None = None,
    ) -> None:
        self.addresses = split_addresses(api)
        self.token = token
        self.timeout = timeout
        self.ca_file = ca_file
        self._credentials = (
            tls.grpc_channel_credentials(None, ca_file=ca_file) if ca_file is not None else None
        )
        self._current = 0
        self._channels: dict[str, grpc.Channel] = {}

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def channel(self, address: str) -> grpc.Channel:
        channel = self._channels.get(address)
        if channel is None:
            options = [
                ("grpc.max_receive_message_length", 8 * 1024 * 1024),
                ("grpc.max_send_message_length", 8 * 1024 * 1024),
            ]
            if self._credentials is None:
                channel = grpc.insecure_channel(address, options=options)
            else:
                channel = grpc.secure_channel(address, self._credentials, options=options)
            self._channels[address] = channel
        return channel

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def call(
        self,
        stub_factory: Callable[[grpc.Channel], Any],
        method: str,
        request: Any,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Call ``method`` on the first reachable controller."""
        last: grpc.RpcError | None = None
        for offset in range(len(self.addresses)):
            index = (self._current + offset) % len(self.addresses)
            stub = stub_factory(self.channel(self.addresses[index]))
            try:
                result = getattr(stub, method)(
                    request, timeout=timeout or self.timeout, metadata=self.metadata
                )
            except grpc.RpcError as exc:
                if exc.code() in _FAILOVER:  # type: ignore[attr-defined]
                    last = exc
                    continue
                raise self.error(exc) from exc
            self._current = index
            return result
        assert last is not None
        raise self.unreachable(last.details() or "unavailable") from last  # type: ignore[attr-defined]

    def error(self, exc: grpc.RpcError) -> errors.SlipwayError:
        """A failed call as a Slipway error; a TLS failure says what is wrong."""
        details = exc.details() or ""  # type: ignore[attr-defined]
        if self.ca_file is not None and tls.tls_failure(details, self.ca_file):
            return self.unreachable(details)
        return errors.from_rpc(exc)

    def unreachable(self, reason: str = "") -> errors.Unavailable:
        """The error for "no controller in the list answered" (``reason``: the last one's)."""
        where = ", ".join(self.addresses)
        return tls.unreachable(where, reason, self.ca_file)

    def platform(self, method: str, request: Any, **kw: Any) -> Any:
        return self.call(platform_pb2_grpc.PlatformServiceStub, method, request, **kw)

    # Convenience wrappers used by the CLI and tests.

    def create_app(self, name: str = "", team: str = "") -> pb.CreateAppResponse:
        return self.platform("CreateApp", pb.CreateAppRequest(name=name, team=team))

    def list_apps(self, team: str = "") -> pb.ListAppsResponse:
        return self.platform("ListApps", pb.ListAppsRequest(team=team))

    def get_app(self, app: str) -> pb.GetAppResponse:
        return self.platform("GetApp", pb.GetAppRequest(app=app))

    def destroy_app(self, app: str, confirm: str) -> pb.DestroyAppResponse:
        return self.platform("DestroyApp", pb.DestroyAppRequest(app=app, confirm=confirm))

    def get_config(self, app: str) -> pb.GetConfigVarsResponse:
        return self.platform("GetConfigVars", pb.GetConfigVarsRequest(app=app))

    def get_config_names(self, app: str) -> list[str]:
        reply: pb.GetConfigVarNamesResponse = self.platform(
            "GetConfigVarNames", pb.GetConfigVarNamesRequest(app=app)
        )
        return list(reply.names)

    def update_config(
        self, app: str, set_vars: dict[str, str] | None = None, unset: list[str] | None = None
    ) -> pb.UpdateConfigVarsResponse:
        return self.platform(
            "UpdateConfigVars",
            pb.UpdateConfigVarsRequest(app=app, set=set_vars or {}, unset=unset or []),
        )

    def list_releases(self, app: str, limit: int = 0) -> pb.ListReleasesResponse:
        return self.platform("ListReleases", pb.ListReleasesRequest(app=app, limit=limit))

    def get_release(self, app: str, version: int = 0) -> pb.GetReleaseResponse:
        return self.platform("GetRelease", pb.GetReleaseRequest(app=app, version=version))

    def rollback(self, app: str, version: int = 0) -> pb.RollbackReleaseResponse:
        return self.platform("RollbackRelease", pb.RollbackReleaseRequest(app=app, version=version))

    def create_release(
        self, app: str, slug: Any, process_types: dict[str, str], description: str = ""
    ) -> pb.CreateReleaseResponse:
        return self.platform(
            "CreateRelease",
            pb.CreateReleaseRequest(
                app=app, slug=slug, process_types=process_types, description=description
            ),
        )

    def get_formation(self, app: str) -> pb.GetFormationResponse:
        return self.platform("GetFormation", pb.GetFormationRequest(app=app))

    def scale(self, app: str, changes: list[pb.FormationChange]) -> pb.ScaleFormationResponse:
        return self.platform("ScaleFormation", pb.ScaleFormationRequest(app=app, changes=changes))

    def list_sizes(self) -> pb.ListSizesResponse:
        return self.platform("ListSizes", pb.ListSizesRequest())

    def list_domains(self, app: str) -> pb.ListDomainsResponse:
        return self.platform("ListDomains", pb.ListDomainsRequest(app=app))

    def get_domain(self, app: str, hostname: str) -> pb.DomainResponse:
        return self.platform("GetDomain", pb.GetDomainRequest(app=app, hostname=hostname))

    def add_domain(self, app: str, hostname: str) -> pb.DomainResponse:
        return self.platform("AddDomain", pb.AddDomainRequest(app=app, hostname=hostname))

    def remove_domain(self, app: str, hostname: str) -> pb.DomainResponse:
        return self.platform("RemoveDomain", pb.RemoveDomainRequest(app=app, hostname=hostname))

    def list_certificates(self, app: str) -> pb.ListCertificatesResponse:
        return self.platform("ListCertificates", pb.ListCertificatesRequest(app=app))

    def get_certificate(self, app: str, name: str) -> pb.CertificateResponse:
        return self.platform("GetCertificate", pb.GetCertificateRequest(app=app, name=name))

    def add_certificate(self, app: str, chain: bytes, key: bytes) -> pb.CertificateResponse:
        request = pb.AddCertificateRequest(app=app, certificate_chain=chain, private_key=key)
        return self.platform("AddCertificate", request)

    def remove_certificate(self, app: str, name: str) -> pb.CertificateResponse:
        return self.platform("RemoveCertificate", pb.RemoveCertificateRequest(app=app, name=name))

    def get_auto_certs(self, app: str) -> pb.AutoCertsResponse:
        return self.platform("GetAutoCerts", pb.GetAutoCertsRequest(app=app))

    def enable_auto_certs(self, app: str) -> pb.AutoCertsResponse:
        return self.platform("EnableAutoCerts", pb.EnableAutoCertsRequest(app=app))

    def disable_auto_certs(self, app: str) -> pb.AutoCertsResponse:
        return self.platform("DisableAutoCerts", pb.DisableAutoCertsRequest(app=app))

    def list_log_drains(self, app: str) -> pb.ListLogDrainsResponse:
        return self.platform("ListLogDrains", pb.ListLogDrainsRequest(app=app))

    def add_log_drain(self, app: str, url: str) -> pb.AddLogDrainResponse:
        return self.platform("AddLogDrain", pb.AddLogDrainRequest(app=app, url=url))

    def remove_log_drain(self, app: str, drain: str) -> pb.RemoveLogDrainResponse:
        return self.platform("RemoveLogDrain", pb.RemoveLogDrainRequest(app=app, drain=drain))

    def list_scheduler_jobs(self, app: str) -> pb.ListSchedulerJobsResponse:
        return self.platform("ListSchedulerJobs", pb.ListSchedulerJobsRequest(app=app))

    def create_scheduler_job(
        self, app: str, every: str, command: str, *, at: str = "", size: str = ""
    ) -> pb.SchedulerJobResponse:
        request = pb.CreateSchedulerJobRequest(
            app=app, every=every, at=at, command=command, size=size
        )
        return self.platform("CreateSchedulerJob", request)

    def remove_scheduler_job(self, app: str, job: str) -> pb.SchedulerJobResponse:
        return self.platform("RemoveSchedulerJob", pb.RemoveSchedulerJobRequest(app=app, job=job))

    def list_addon_services(self) -> pb.ListAddonServicesResponse:
        return self.platform("ListAddonServices", pb.ListAddonServicesRequest())

    def list_addons(self, app: str) -> pb.ListAddonsResponse:
        return self.platform("ListAddons", pb.ListAddonsRequest(app=app))

    def create_addon(
        self, app: str, service: str, as_name: str = "", options: dict[str, str] | None = None
    ) -> pb.AddonResponse:
        request = pb.CreateAddonRequest(
            app=app, service=service, as_name=as_name, options=options or {}
        )
        return self.platform("CreateAddon", request)

    def get_addon(self, app: str, addon: str) -> pb.AddonResponse:
        return self.platform("GetAddon", pb.GetAddonRequest(app=app, addon=addon))

    def attach_addon(self, app: str, addon: str, as_name: str = "") -> pb.AddonResponse:
        request = pb.AttachAddonRequest(app=app, addon=addon, as_name=as_name)
        return self.platform("AttachAddon", request)

    def detach_addon(self, app: str, attachment: str) -> pb.DetachAddonResponse:
        request = pb.DetachAddonRequest(app=app, attachment=attachment)
        return self.platform("DetachAddon", request)

    def upgrade_addon(self, app: str, addon: str, plan: str) -> pb.AddonResponse:
        request = pb.UpgradeAddonRequest(app=app, addon=addon, plan=plan)
        return self.platform("UpgradeAddon", request)

    def destroy_addon(self, app: str, addon: str, confirm: str) -> pb.AddonResponse:
        request = pb.DestroyAddonRequest(app=app, addon=addon, confirm=confirm)
        return self.platform("DestroyAddon", request)

    def retry_addon(self, app: str, addon: str) -> pb.AddonResponse:
        return self.platform("RetryAddon", pb.RetryAddonRequest(app=app, addon=addon))

    def addon_details(self, app: str, addon: str) -> pb.AddonDetailsResponse:
        request = pb.GetAddonDetailsRequest(app=app, addon=addon)
        return self.platform("GetAddonDetails", request, timeout=PROVIDER_CALL_TIMEOUT)

    def download_addon_backup(
        self, app: str, addon: str, backup: str = "", *, timeout: float = 3600.0
    ) -> Iterator[pb.DownloadAddonBackupResponse]:
        """The backup's id and size, then its bytes; the deadline bounds the whole stream."""
        request = pb.DownloadAddonBackupRequest(app=app, addon=addon, backup=backup)
        try:
            yield from self.platform("DownloadAddonBackup", request, timeout=timeout)
        except grpc.RpcError as exc:
            raise self.error(exc) from exc

    def run_addon_action(
        self, app: str, addon: str, action: str, confirm: str, argument: str = ""
    ) -> pb.RunAddonActionResponse:
        request = pb.RunAddonActionRequest(
            app=app, addon=addon, action=action, confirm=confirm, argument=argument
        )
        return self.platform("RunAddonAction", request, timeout=PROVIDER_CALL_TIMEOUT)

    def list_dynos(self, app: str) -> pb.ListDynosResponse:
        return self.platform("ListDynos", pb.ListDynosRequest(app=app))

    def restart_dynos(self, app: str, target: str = "") -> pb.RestartDynosResponse:
        return self.platform("RestartDynos", pb.RestartDynosRequest(app=app, target=target))

    def stop_dyno(self, app: str, dyno: str) -> pb.StopDynoResponse:
        return self.platform("StopDyno", pb.StopDynoRequest(app=app, dyno=dyno))

    def list_nodes(self) -> pb.ListNodesResponse:
        return self.platform("ListNodes", pb.ListNodesRequest())

    def drain_node(self, node: str, *, undrain: bool = False) -> pb.DrainNodeResponse:
        return self.platform("DrainNode", pb.DrainNodeRequest(node=node, undrain=undrain))

    def whoami(self) -> pb.WhoAmIResponse:
        return self.platform("WhoAmI", pb.WhoAmIRequest())

    # Accounts and access.

    def login(self, email: str, password: str) -> pb.LoginResponse:
        return self.platform("Login", pb.LoginRequest(email=email, password=password))

    def list_authorizations(self) -> pb.ListAuthorizationsResponse:
        return self.platform("ListAuthorizations", pb.ListAuthorizationsRequest())

    def create_authorization(
        self, description: str, scope: str = "global", expires_in_seconds: int = 0
    ) -> pb.CreateAuthorizationResponse:
        request = pb.CreateAuthorizationRequest(
            description=description, scope=scope, expires_in_seconds=expires_in_seconds
        )
        return self.platform("CreateAuthorization", request)

    def revoke_authorization(self, token_id: str) -> pb.RevokeAuthorizationResponse:
        return self.platform("RevokeAuthorization", pb.RevokeAuthorizationRequest(id=token_id))

    def audit_events(self, app: str = "", limit: int = 100) -> pb.ListAuditEventsResponse:
        """The app's audit trail, or with no app the platform's (admins)."""
        if app:
            return self.platform("ListAuditEvents", pb.ListAuditEventsRequest(app=app, limit=limit))
        request = pb.ListPlatformAuditEventsRequest(limit=limit)
        return self.platform("ListPlatformAuditEvents", request)

    def list_users(self) -> pb.ListUsersResponse:
        return self.platform("ListUsers", pb.ListUsersRequest())

    def create_user(self, email: str, password: str = "", admin: bool = False) -> pb.User:
        request = pb.CreateUserRequest(email=email, password=password, admin=admin)
        reply: pb.CreateUserResponse = self.platform("CreateUser", request)
        return reply.user

    def remove_user(self, email: str) -> pb.RemoveUserResponse:
        return self.platform("RemoveUser", pb.RemoveUserRequest(email=email))

    # teams

    def list_teams(self) -> list[pb.Team]:
        reply: pb.ListTeamsResponse = self.platform("ListTeams", pb.ListTeamsRequest())
        return list(reply.teams)

    def create_team(self, team: str) -> pb.Team:
        reply: pb.CreateTeamResponse = self.platform("CreateTeam", pb.CreateTeamRequest(team=team))
        return reply.team

    def destroy_team(self, team: str, confirm: str) -> None:
        self.platform("DestroyTeam", pb.DestroyTeamRequest(team=team, confirm=confirm))

    def list_team_members(self, team: str) -> list[pb.TeamMember]:
        reply: pb.ListTeamMembersResponse = self.platform(
            "ListTeamMembers", pb.ListTeamMembersRequest(team=team)
        )
        return list(reply.members)

    def set_team_member(
        self, team: str, email: str, role: str, *, update: bool = False
    ) -> pb.TeamMember:
        request = pb.SetTeamMemberRequest(team=team, email=email, role=role, update=update)
        reply: pb.SetTeamMemberResponse = self.platform("SetTeamMember", request)
        return reply.member

    def remove_team_member(self, team: str, email: str) -> None:
        self.platform("RemoveTeamMember", pb.RemoveTeamMemberRequest(team=team, email=email))

    def list_collaborators(self, app: str) -> pb.ListCollaboratorsResponse:
        return self.platform("ListCollaborators", pb.ListCollaboratorsRequest(app=app))

    def add_collaborator(self, app: str, email: str, permissions: list[str]) -> pb.Collaborator:
        request = pb.AddCollaboratorRequest(app=app, email=email, permissions=permissions)
        reply: pb.AddCollaboratorResponse = self.platform("AddCollaborator", request)
        return reply.collaborator

    def update_collaborator(self, app: str, email: str, permissions: list[str]) -> pb.Collaborator:
        request = pb.UpdateCollaboratorRequest(app=app, email=email, permissions=permissions)
        reply: pb.UpdateCollaboratorResponse = self.platform("UpdateCollaborator", request)
        return reply.collaborator

    def remove_collaborator(self, app: str, email: str) -> pb.RemoveCollaboratorResponse:
        request = pb.RemoveCollaboratorRequest(app=app, email=email)
        return self.platform("RemoveCollaborator", request)

    # Builds.

    def upload_source(
        self,
        app: str,
        path: Path,
        *,
        sha256: str,
        source_version: str = "",
        progress: Callable[[int, int], None] | None = None,
        chunk_size: int = UPLOAD_CHUNK,
    ) -> pb.UploadSourceResponse:
        """Stream a source tarball to the controller; ``progress(sent, total)`` per chunk."""
        size = path.stat().st_size

        def messages() -> Iterator[pb.UploadSourceRequest]:
            yield pb.UploadSourceRequest(
                metadata=pb.UploadSourceMetadata(
                    app=app, size=size, sha256=sha256, source_version=source_version
                )
            )
            sent = 0
            with open(path, "rb") as fh:
                while chunk := fh.read(chunk_size):
                    sent += len(chunk)
                    yield pb.UploadSourceRequest(chunk=chunk)
                    if progress is not None:
                        progress(sent, size)

        # The deadline grows with the size: at least 1 MB/s must get through. The
        # request stream is consumed once: a failover would resend a half-read
        # generator, so uploads go to one controller and a failure is final.
        return self.call(
            platform_pb2_grpc.PlatformServiceStub,
            "UploadSource",
            messages(),
            timeout=max(self.timeout, 60.0 + size / (1024 * 1024)),
        )

    def list_builds(self, app: str, limit: int = 0) -> pb.ListBuildsResponse:
        return self.platform("ListBuilds", pb.ListBuildsRequest(app=app, limit=limit))

    def get_build(self, app: str, build_id: str = "") -> pb.GetBuildResponse:
        return self.platform("GetBuild", pb.GetBuildRequest(app=app, id=build_id))

    def stream_build_output(
        self, app: str, build_id: str = "", *, timeout: float = 3600.0
    ) -> Iterator[pb.StreamBuildOutputResponse]:
        """Replay then follow a build's output; the last item carries the finished build.

        The deadline bounds the whole stream (a build is limited to 15 minutes by default,
        plus its release phase), so a stuck controller cannot hang the CLI forever.

        A stream breaks when the controller serving it dies; the build goes on
        without it. Then the stream is opened again on the next controller, and
        its replay skips the lines already passed on (known by attempt,
        timestamp and text), so the caller sees each line once.
        """
        deadline = time.monotonic() + timeout
        seen: set[tuple[int, int, int, str]] = set()
        backoff = Backoff(initial=0.2, maximum=2.0)
        while True:
            stream = self.platform(
                "StreamBuildOutput",
                pb.StreamBuildOutputRequest(app=app, id=build_id),
                timeout=max(0.1, deadline - time.monotonic()),
            )
            try:
                for item in stream:
                    backoff.reset()
                    if item.WhichOneof("event") == "line":
                        line = item.line
                        key = (line.attempt, line.at.seconds, line.at.nanos, line.line)
                        if key in seen:
                            continue
                        seen.add(key)
                    yield item
                return
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                # A streaming call fails while it is read, after call() chose its
                # controller: move on to the next one here. A few rounds cover a
                # controller dying; more failures in a row are an outage.
                if code not in _FAILOVER or backoff.attempts >= 3 * len(self.addresses):
                    raise self.error(exc) from exc
                self._current = (self._current + 1) % len(self.addresses)
            time.sleep(backoff.next())

    def set_stack(self, app: str, stack: str) -> pb.SetStackResponse:
        return self.platform("SetStack", pb.SetStackRequest(app=app, stack=stack))

    def set_buildpacks(
        self,
        app: str,
        action: pb.BuildpacksAction,
        buildpacks: Sequence[str] = (),
        index: int = 0,
    ) -> pb.SetBuildpacksResponse:
        return self.platform(
            "SetBuildpacks",
            pb.SetBuildpacksRequest(
                app=app, action=action, buildpacks=list(buildpacks), index=index
            ),
        )

    def purge_build_cache(self, app: str, confirm: str) -> pb.PurgeBuildCacheResponse:
        return self.platform("PurgeBuildCache", pb.PurgeBuildCacheRequest(app=app, confirm=confirm))

    # Logs.

    def stream_logs(
        self,
        app: str,
        *,
        num: int = 0,
        tail: bool = False,
        source: str = "",
        dyno: str = "",
        timeout: float | None = None,
        on_resume: Callable[[str, str], None] | None = None,
    ) -> Generator[pb.LogEntry, None, None]:
        """The app's last ``num`` lines (0: 100), then with ``tail`` live lines until closed.

        History alone has a deadline and goes to the next controller only while
        nothing came back. A tail is open-ended and ends when the caller stops
        iterating (closing the generator cancels the call); it also outlives the
        controller serving it: when its stream breaks (or ends, which a tail never
        does on its own) it is opened again on the next controller, resuming after
        the last line's cursor (its message's sequence and its index in that
        message), so each line comes once and in order.
        ``on_resume(address, reason)`` hears of each such break. A few rounds over
        every address without a line in between mean an outage: the tail gives up.
        """
        request = pb.StreamLogsRequest(app=app, num=num, tail=tail, source=source, dyno=dyno)
        deadline = None if tail else (timeout or self.timeout)
        tries = 3 * len(self.addresses) if tail else len(self.addresses)
        backoff = Backoff(initial=0.2, maximum=2.0)
        # (seq, index) of the last line passed on; seq 0 while none (or an older controller)
        last = (0, 0)
        received = False
        while True:
            address = self.addresses[self._current]
            stub = platform_pb2_grpc.PlatformServiceStub(self.channel(address))
            call = stub.StreamLogs(request, timeout=deadline, metadata=self.metadata)
            failure: grpc.RpcError | None = None
            reason = "the stream ended"
            try:
                for response in call:
                    backoff.reset()
                    for entry in response.lines:
                        at = (entry.seq, entry.index)
                        if entry.seq and at <= last:
                            continue  # already passed on (a resumed stream never repeats)
                        received, last = True, max(last, at)
                        yield entry
                if not tail or (received and not last[0]):
                    return
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()  # type: ignore[attr-defined]
                # Once lines came, only a tail that knows where it stands may go on.
                resumable = not received or (tail and last[0] > 0)
                if code not in _FAILOVER or not resumable:
                    raise self.error(exc) from exc
                failure, reason = exc, details or "unavailable"
            finally:
                call.cancel()
            if backoff.attempts + 1 >= tries:
                raise self.unreachable(reason) from failure
            if received:
                request.after_seq, request.after_index = last
                if on_resume is not None and backoff.attempts == 0:
                    on_resume(address, reason)
            self._current = (self._current + 1) % len(self.addresses)
            delay = backoff.next()
            if tail:  # a history read tries each controller once, at once, as before
                time.sleep(delay)

    # One-off dynos.

    def run_dyno(self, requests: Iterator[pb.RunDynoRequest], *, timeout: float = 86400.0) -> Any:
        """Open a RunDyno stream (the first request must be ``start``) on the first
        controller that answers; returns the call: iterate it for the responses,
        ``cancel()`` it to hang up. The deadline bounds the whole session (Heroku
        cycles dynos daily, so one day)."""
        last: Exception | None = None
        for offset in range(len(self.addresses)):
            index = (self._current + offset) % len(self.addresses)
            channel = self.channel(self.addresses[index])
            try:
                # A stream cannot be replayed to another controller once its first
                # message left, so pick one that is reachable first.
                grpc.channel_ready_future(channel).result(timeout=self.timeout)
            except grpc.FutureTimeoutError as exc:
                last = exc
                continue
            self._current = index
            stub = platform_pb2_grpc.PlatformServiceStub(channel)
            return stub.RunDyno(requests, timeout=timeout, metadata=self.metadata)
        raise self.unreachable() from last
