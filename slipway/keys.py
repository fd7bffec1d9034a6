"""The etcd key layout: every key Slipway writes lives under one prefix.

    {prefix}/apps/{app}                    App record (JSON)
    {prefix}/config/{app}                  config vars (JSON object)
    {prefix}/releases/{app}/{version:010d} Release (JSON)
    {prefix}/formation/{app}               {type: {quantity, size}} (JSON)
    {prefix}/tokens/{sha256 hex}           API token record (JSON), never the token itself;
                                           a node's token says {"node": NAME}
    {prefix}/users/{email}                 account (JSON; password as a scrypt digest)
    {prefix}/access/{app}/{email}          a collaborator's permissions on the app (JSON)
    {prefix}/teams/{team}                  team (JSON)
    {prefix}/members/{team}/{email}        a team member's role (JSON)
    {prefix}/audit/{app|_platform}/{seq:012d} audit record (JSON; the last N are kept)
    {prefix}/auditseq/{app|_platform}      last audit sequence number
    {prefix}/jointokens/{sha256 hex}       one-time join token (JSON {node, expires_at}),
                                           under a lease of its TTL; deleted when used
    {prefix}/nodes/{node}                  node presence (JSON), by the agent under its own lease
    {prefix}/drains/{node}                 the node is draining (nodes:drain); its dynos move away
    {prefix}/nodemetrics/{node}            last heartbeat figures (JSON), written by the controller
    {prefix}/dynos/{app}/{instance}        desired dyno placement (JSON; the leader's scheduler)
    {prefix}/status/{app}/{instance}       actual dyno state (JSON), by the agent under its lease
    {prefix}/routes/apps/{app}             what routers need to know of an app (JSON, see below)
    {prefix}/routes/dynos/{app}/{instance} an up web dyno's address (JSON), agent's lease
    {prefix}/routes/domains/{hostname}     custom domain -> {"app": name}; the key makes a
                                           host name belong to one app only
    {prefix}/routes/certs/{hostname}       the HTTPS certificate routers serve for a host name
                                           or *.domain (JSON; slipway/certs.py)
    {prefix}/domains/{app}/{hostname}      an app's custom domain (JSON; controller/core/domains.py)
    {prefix}/appcerts/{app}/{name}         a certificate the app uploaded (certs:add; key sealed)
    {prefix}/routes/acme/{token}           an ACME HTTP-01 challenge every router answers (JSON
                                           {"key_authorization", "host"}), under a lease
    {prefix}/acme/account                  the cluster's ACME account (JSON; key sealed)
    {prefix}/acmeapps/{app}                automated certificates are on for the app (JSON)
    {prefix}/acmestatus/{app}/{hostname}   each domain's automated certificate: status, last
                                           error, next attempt (JSON; controller/core/acme.py)
    {prefix}/edgeseq/{app}                 bumped by every change to the app's domains and
                                           certificates: such changes are serialised by it
    {prefix}/leader                        controller leader election
    {prefix}/builds/{app}/{build_id}       Build record (JSON; the controller's builds module)
    {prefix}/runseq/{app}                  last one-off dyno number (run.N) of the app
    {prefix}/schedjobs/{app}/{id}          a scheduler job (JSON; controller/core/cron.py)
    {prefix}/schedseq/{app}                last scheduler dyno number (scheduler.N) of the app
    {prefix}/logdrains/{app}/{id}          a log drain (JSON; controller/core/drains.py)
    {prefix}/drainpool/{member}            a controller serving drains, under its lease
    {prefix}/drainowners/{id}              which pool member sends drain {id}, its lease
    {prefix}/addonservices/{service}       a registered add-on provider (JSON manifest, with its
                                           plans and the shared secret; controller/core/addons.py)
    {prefix}/addons/{uuid}                 an add-on (JSON: service, plan, owning app, state)
    {prefix}/addonnames/{name}             add-on name -> uuid (names are unique platform-wide)
    {prefix}/attachments/{app}/{name}      an add-on attached to the app under NAME (JSON)
    {prefix}/addongrants/{app}             where the app's dynos may connect for their built-in
                                           add-ons (JSON list of address/port; no secrets), read
                                           by every agent for its firewall (slipway/records.py)

Route records (what routers read; written by the control plane):
    routes/apps/{app}:  {"app": str, "web": int (desired web quantity),
                          "released": bool, "maintenance": bool,
                          "crashed": bool (every web dyno crashed),
                          "balance": "random" | "least-loaded"}
    routes/dynos/{app}/{instance}: {"app": str, "dyno": "web.1", "address": "host:port",
                                    "node": str, "release": int}
    The last key segment is an opaque id (a dyno name can have two instances during a
    rollout); routers use the JSON value.

Agents hold their presence, statuses and routes under their own etcd lease, so a
controller outage changes nothing for running dynos and routers, while a dead
node's routes and statuses vanish when its lease expires.
"""

from __future__ import annotations

DEFAULT_PREFIX = "/slipway"


class Keys:
    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix.rstrip("/")

    def _k(self, *parts: str) -> bytes:
        return "/".join((self.prefix, *parts)).encode()

    # apps and their state
    def app(self, app: str) -> bytes:
        return self._k("apps", app)

    def apps(self) -> bytes:
        return self._k("apps", "")

    def config(self, app: str) -> bytes:
        return self._k("config", app)

    def release(self, app: str, version: int) -> bytes:
        return self._k("releases", app, f"{version:010d}")

    def releases(self, app: str) -> bytes:
        return self._k("releases", app, "")

    def releases_all(self) -> bytes:
        return self._k("releases", "")

    def formation(self, app: str) -> bytes:
        return self._k("formation", app)

    def token(self, digest: str) -> bytes:
        return self._k("tokens", digest)

    def tokens(self) -> bytes:
        return self._k("tokens", "")

    def user(self, email: str) -> bytes:
        return self._k("users", email)

    def users(self) -> bytes:
        return self._k("users", "")

    def collaborator(self, app: str, email: str) -> bytes:
        return self._k("access", app, email)

    def collaborators(self, app: str | None = None) -> bytes:
        return self._k("access", app, "") if app else self._k("access", "")

    def team(self, team: str) -> bytes:
        return self._k("teams", team)

    def teams(self) -> bytes:
        return self._k("teams", "")

    def member(self, team: str, email: str) -> bytes:
        return self._k("members", team, email)

    def members(self, team: str | None = None) -> bytes:
        return self._k("members", team, "") if team else self._k("members", "")

    def audit_record(self, scope: str, seq: int) -> bytes:
        return self._k("audit", scope, f"{seq:012d}")

    def audit_records(self, scope: str) -> bytes:
        return self._k("audit", scope, "")

    def audit_seq(self, scope: str) -> bytes:
        return self._k("auditseq", scope)

    def join_token(self, digest: str) -> bytes:
        return self._k("jointokens", digest)

    def join_tokens(self) -> bytes:
        return self._k("jointokens", "")

    # cluster
    def node(self, node: str) -> bytes:
        return self._k("nodes", node)

    def nodes(self) -> bytes:
        return self._k("nodes", "")

    def drain(self, node: str) -> bytes:
        return self._k("drains", node)

    def drains(self) -> bytes:
        return self._k("drains", "")

    def formations(self) -> bytes:
        return self._k("formation", "")

    def node_metrics(self, node: str) -> bytes:
        return self._k("nodemetrics", node)

    def node_metrics_all(self) -> bytes:
        return self._k("nodemetrics", "")

    def dyno(self, app: str, instance: str) -> bytes:
        return self._k("dynos", app, instance)

    def dynos(self, app: str | None = None) -> bytes:
        return self._k("dynos", app, "") if app else self._k("dynos", "")

    def status(self, app: str, instance: str) -> bytes:
        return self._k("status", app, instance)

    def statuses(self, app: str | None = None) -> bytes:
        return self._k("status", app, "") if app else self._k("status", "")

    def leader(self) -> bytes:
        return self._k("leader")

    def run_seq(self, app: str) -> bytes:
        return self._k("runseq", app)

    # scheduler jobs (scheduler:create) and the counter naming their runs scheduler.N
    def scheduler_job(self, app: str, job_id: str) -> bytes:
        return self._k("schedjobs", app, job_id)

    def scheduler_jobs(self, app: str | None = None) -> bytes:
        return self._k("schedjobs", app, "") if app else self._k("schedjobs", "")

    def scheduler_seq(self, app: str) -> bytes:
        return self._k("schedseq", app)

    # log drains
    def log_drain(self, app: str, drain_id: str) -> bytes:
        return self._k("logdrains", app, drain_id)

    def log_drains(self, app: str | None = None) -> bytes:
        return self._k("logdrains", app, "") if app else self._k("logdrains", "")

    def drain_member(self, member: str) -> bytes:
        return self._k("drainpool", member)

    def drain_members(self) -> bytes:
        return self._k("drainpool", "")

    def drain_owner(self, drain_id: str) -> bytes:
        return self._k("drainowners", drain_id)

    def drain_owners(self) -> bytes:
        return self._k("drainowners", "")

    # add-ons
    def addon_service(self, service: str) -> bytes:
        return self._k("addonservices", service)

    def addon_services(self) -> bytes:
        return self._k("addonservices", "")

    def addon(self, addon_id: str) -> bytes:
        return self._k("addons", addon_id)

    def addons(self) -> bytes:
        return self._k("addons", "")

    def addon_name(self, name: str) -> bytes:
        return self._k("addonnames", name)

    def attachment(self, app: str, name: str) -> bytes:
        return self._k("attachments", app, name)

    def attachments(self, app: str | None = None) -> bytes:
        return self._k("attachments", app, "") if app else self._k("attachments", "")

    def addon_grant(self, app: str) -> bytes:
        return self._k("addongrants", app)

    def addon_grants(self) -> bytes:
        return self._k("addongrants", "")

    # builds
    def build(self, app: str, build_id: str) -> bytes:
        return self._k("builds", app, build_id)

    def builds(self, app: str | None = None) -> bytes:
        return self._k("builds", app, "") if app else self._k("builds", "")

    # routing
    def route_app(self, app: str) -> bytes:
        return self._k("routes", "apps", app)

    def route_dyno(self, app: str, instance: str) -> bytes:
        return self._k("routes", "dynos", app, instance)

    def route_dynos(self, app: str | None = None) -> bytes:
        return self._k("routes", "dynos", app, "") if app else self._k("routes", "dynos", "")

    def route_domain(self, hostname: str) -> bytes:
        return self._k("routes", "domains", hostname)

    # custom domains and uploaded certificates (controller/store/domains.py)
    def domain(self, app: str, hostname: str) -> bytes:
        return self._k("domains", app, hostname)

    def domains(self, app: str) -> bytes:
        return self._k("domains", app, "")

    def app_cert(self, app: str, name: str) -> bytes:
        return self._k("appcerts", app, name)

    def app_certs(self, app: str) -> bytes:
        return self._k("appcerts", app, "")

    # automated certificates (controller/loops/acme.py)
    def route_challenge(self, token: str) -> bytes:
        return self._k("routes", "acme", token)

    def acme_account(self) -> bytes:
        return self._k("acme", "account")

    def acme_app(self, app: str) -> bytes:
        return self._k("acmeapps", app)

    def acme_apps(self) -> bytes:
        return self._k("acmeapps", "")

    def acme_status(self, app: str, hostname: str) -> bytes:
        return self._k("acmestatus", app, hostname)

    def acme_statuses(self, app: str | None = None) -> bytes:
        return self._k("acmestatus", app, "") if app else self._k("acmestatus", "")

    def edge_seq(self, app: str) -> bytes:
        return self._k("edgeseq", app)

    def route_cert(self, hostname: str) -> bytes:
        """The HTTPS certificate for ``hostname`` (or ``*.domain``): slipway.certs."""
        return self._k("routes", "certs", hostname)

    def routes(self) -> bytes:
        return self._k("routes", "")
