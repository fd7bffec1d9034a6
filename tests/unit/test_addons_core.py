"""The pure rules of add-ons: manifests, names, config var mapping, the state machine."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from controller.core import addons as core
from controller.core.addons import AddonRecord, Answer, AttachmentRecord, Call, Outcome
from slipway import errors


def manifest(**api: object) -> str:
    doc = {
        "id": "pg",
        "name": "Postgres",
        "api": {
            "password": "p" * 20,
            "config_vars_prefix": "PG",
            "config_vars": ["PG_URL"],
            "production": {"base_url": "https://pg.example.com/heroku/resources/"},
            **api,
        },
        "plans": [{"name": "mini", "default": True}, {"name": "big"}],
        "default_attachment": "DATABASE",
    }
    return json.dumps(doc)


def addon(**kw: object) -> AddonRecord:
    base = AddonRecord(
        id="0" * 8 + "-0000-0000-0000-" + "0" * 12,
        name="pg-curved-12345",
        service="pg",
        plan="mini",
        app="shop",
        state=core.PROVISIONING,
        created_at=0.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_manifest_fields_become_the_service_record() -> None:
    record = core.parse_manifest(manifest(), now=5.0)
    assert record.name == "pg"
    assert record.base_url == "https://pg.example.com/heroku/resources"
    assert [p.name for p in record.plans] == ["mini", "big"]
    assert record.plan("").name == "mini" and record.plan("big").name == "big"
    assert record.default_attachment == "DATABASE"
    with pytest.raises(errors.NotFound, match="its plans: mini, big"):
        record.plan("huge")


@pytest.mark.parametrize(
    ("api", "message"),
    [
        ({"password": "short"}, "at least 16"),
        ({"production": {"base_url": "ftp://x"}}, "not an https URL"),
        ({"production": {"base_url": "http://pg.example.com/r"}}, "in the clear"),
        ({"config_vars_prefix": "1BAD"}, "invalid config var name"),
    ],
)
def test_bad_manifests_are_refused(api: dict[str, object], message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        core.parse_manifest(manifest(**api), now=0)


def test_plain_http_is_allowed_to_a_provider_on_this_host() -> None:
    text = manifest(production={"base_url": "http://127.0.0.1:9000/r"})
    assert core.parse_manifest(text, now=0).base_url == "http://127.0.0.1:9000/r"


def test_attachment_names_map_the_providers_vars() -> None:
    config = {"PG_URL": "postgres://a", "PG_READONLY_URL": "postgres://b", "OTHER": "x"}
    assert core.attached_vars("PG", config, "DATABASE") == {
        "DATABASE_URL": "postgres://a",
        "DATABASE_READONLY_URL": "postgres://b",
        "DATABASE_OTHER": "x",
    }


def test_the_second_attachment_of_a_service_gets_a_color() -> None:
    service = core.parse_manifest(manifest(), now=0)
    assert core.default_attachment_name(service, []) == "DATABASE"
    assert core.default_attachment_name(service, ["DATABASE"]) == "PG_AMBER"
    assert core.default_attachment_name(service, ["DATABASE", "PG_AMBER"]) == "PG_BLACK"


def test_provider_config_takes_heroku_lists_and_objects() -> None:
    assert core.provider_config([{"name": "A_URL", "value": "x"}]) == {"A_URL": "x"}
    assert core.provider_config({"A_URL": "x"}) == {"A_URL": "x"}
    with pytest.raises(errors.InvalidArgument):
        core.provider_config({"A_URL": 5})
    with pytest.raises(errors.InvalidArgument):
        core.provider_config({"bad-name": "x"})


def test_a_5xx_is_retried_with_growing_delays_then_fails() -> None:
    a = addon()
    delays = []
    for _ in range(core.MAX_PROVISION_ATTEMPTS - 1):
        fresh = core.after_answer(a, Call.PROVISION, Answer(Outcome.RETRY, message="500"), 100.0)
        assert fresh is not None and fresh.state == core.PROVISIONING
        delays.append(fresh.next_attempt_at - 100.0)
        assert core.due_call(fresh, 100.0, 1) is None  # not before the delay
        a = fresh
    assert delays == sorted(delays) and delays[0] == core.RETRY_INITIAL_SECONDS
    last = core.after_answer(a, Call.PROVISION, Answer(Outcome.RETRY, message="500"), 100.0)
    assert last is not None and last.state == core.FAILED
    assert "did not answer after 8 attempts" in last.error


def test_a_4xx_fails_with_the_providers_message_and_retry_starts_over() -> None:
    refused = core.after_answer(
        addon(), Call.PROVISION, Answer(Outcome.REFUSED, message="no capacity"), 1.0
    )
    assert refused is not None and refused.state == core.FAILED and refused.error == "no capacity"
    assert core.due_call(refused, 2.0, 1) is None
    again = core.retried(refused)
    assert again.state == core.PROVISIONING and core.due_call(again, 2.0, 1) is Call.PROVISION
    with pytest.raises(errors.FailedPrecondition):
        core.retried(again)


def test_202_waits_for_the_callback_and_expires_after_the_deadline() -> None:
    accepted = core.after_answer(
        addon(), Call.PROVISION, Answer(Outcome.ACCEPTED, provider_id="r1"), 10.0
    )
    assert accepted is not None and accepted.accepted_at == 10.0 and accepted.provider_id == "r1"
    assert core.due_call(accepted, 11.0, 1) is None  # no second POST while waiting
    assert not core.async_expired(accepted, 10.0 + 60, 3600)
    assert core.async_expired(accepted, 10.0 + 3601, 3600)


def test_done_provisions_with_config_and_bumps_its_version() -> None:
    done = core.after_answer(
        addon(), Call.PROVISION, Answer(Outcome.DONE, "r1", {"PG_URL": "postgres://x"}), 3.0
    )
    assert done is not None and done.state == core.PROVISIONED
    assert done.config == {"PG_URL": "postgres://x"} and done.config_version == 1
    assert done.applied_plan == "mini" and done.provisioned_at == 3.0


def test_plan_changes_are_asked_until_confirmed_and_refusals_keep_the_old_plan() -> None:
    live = addon(state=core.PROVISIONED, applied_plan="mini", plan="big")
    assert core.due_call(live, 0.0, 1) is Call.CHANGE_PLAN
    confirmed = core.after_answer(live, Call.CHANGE_PLAN, Answer(Outcome.DONE), 1.0)
    assert confirmed is not None and confirmed.applied_plan == "big"
    assert core.due_call(confirmed, 1.0, 1) is None
    refused = core.after_answer(live, Call.CHANGE_PLAN, Answer(Outcome.REFUSED, message="no"), 1.0)
    assert (
        refused is not None
        and refused.plan == "mini"
        and "refused the plan change" in refused.error
    )


def test_deprovision_waits_for_attachments_and_gone_means_done() -> None:
    going = core.deprovision(addon(state=core.PROVISIONED, applied_plan="mini"))
    assert core.due_call(going, 0.0, attached=1) is None
    assert core.due_call(going, 0.0, attached=0) is Call.DEPROVISION
    assert core.after_answer(going, Call.DEPROVISION, Answer(Outcome.DONE), 1.0) is None
    retry = core.after_answer(going, Call.DEPROVISION, Answer(Outcome.REFUSED, message="?"), 1.0)
    assert retry is not None and retry.state == core.DEPROVISIONING and retry.next_attempt_at > 1.0


def _attachment(app: str, name: str, a: AddonRecord, digest: str = "") -> AttachmentRecord:
    return AttachmentRecord(
        app=app,
        name=name,
        addon_id=a.id,
        addon_name=a.name,
        created_at=0.0,
        applied_digest=digest,
        applied_plan=a.applied_plan if digest else "",
    )


def test_plan_work_syncs_new_config_and_detaches_before_deprovisioning() -> None:
    live = addon(state=core.PROVISIONED, applied_plan="mini", config={"PG_URL": "x"})
    synced = core.digest_vars(core.attached_vars("PG", live.config, "DATABASE"))
    prefixes = {"pg": "PG"}
    current = _attachment("shop", "DATABASE", live, synced)
    assert core.plan_work([live], [current], {"shop"}, prefixes, 0.0).empty
    stale = _attachment("shop", "DATABASE", live, "old")
    assert core.plan_work([live], [stale], {"shop"}, prefixes, 0.0).sync == [("shop", "DATABASE")]

    going = core.deprovision(live)
    work = core.plan_work([going], [current], {"shop"}, prefixes, 0.0)
    assert work.detach == [("shop", "DATABASE")] and work.calls == []
    work = core.plan_work([going], [], {"shop"}, prefixes, 0.0)
    assert work.calls == [(going.id, Call.DEPROVISION)]


def test_plan_work_deprovisions_the_add_ons_of_destroyed_apps() -> None:
    live = addon(state=core.PROVISIONED, applied_plan="mini")
    work = core.plan_work([live], [], set(), {"pg": "PG"}, 0.0)
    assert work.orphaned == [live.id]
    other = _attachment("gone", "DATABASE", live, "d")
    work = core.plan_work([live], [other], {"shop"}, {"pg": "PG"}, 0.0)
    assert work.detach == [("gone", "DATABASE")]


def test_a_built_in_service_names_the_network_its_resources_listen_on() -> None:
    doc = json.loads(manifest())
    doc["slipway"] = {"built_in": True, "network": {"address": "192.0.2.2", "ports": "5433"}}
    record = core.parse_manifest(json.dumps(doc), now=0)
    assert (record.built_in, record.network_address, record.network_ports) == (
        True,
        "192.0.2.2",
        "5433",
    )
    assert core.port_range("15500-15599") == (15500, 15599)
    for bad, message in (
        ({"address": "db.example.com", "ports": "5433"}, "must be an IPv4 address"),
        ({"address": "192.0.2.2", "ports": "99999"}, "bad port range"),
        ({"address": "192.0.2.2", "ports": "20-10"}, "bad port range"),
    ):
        doc["slipway"] = {"built_in": True, "network": bad}
        with pytest.raises(errors.InvalidArgument, match=message):
            core.parse_manifest(json.dumps(doc), now=0)


def test_network_grants_cover_attached_apps_and_only_the_declared_endpoints() -> None:
    doc = json.loads(manifest())
    doc["slipway"] = {"built_in": True, "network": {"address": "192.0.2.2", "ports": "5433"}}
    builtin = core.parse_manifest(json.dumps(doc), now=0)
    third_party = core.parse_manifest(manifest(), now=0)
    third_party.name = "other"
    db = addon(
        state=core.PROVISIONED,
        config={
            "PG_URL": "postgres://u:p@192.0.2.2:5433/d?sslmode=require",
            # Outside the declaration: never granted, whatever the provider says.
            "PG_ETCD": "https://192.0.2.2:2379",
            "PG_ELSEWHERE": "postgres://u:p@10.0.0.9:5433/d",
        },
    )
    pending = addon(id="1" * 8 + "-0000-0000-0000-" + "1" * 12, state=core.PROVISIONING)
    pending.config = dict(db.config)
    foreign = addon(
        id="2" * 8 + "-0000-0000-0000-" + "2" * 12, service="other", state=core.PROVISIONED
    )
    foreign.config = dict(db.config)

    def attach(app: str, target: AddonRecord) -> core.AttachmentRecord:
        return core.AttachmentRecord(app, "DATABASE", target.id, target.name, 0.0)

    grants = core.network_grants(
        [builtin, third_party],
        [db, pending, foreign],
        [attach("shop", db), attach("blog", db), attach("wiki", pending), attach("news", foreign)],
    )
    assert grants == {
        "blog": [core.NetworkGrant("blog", "192.0.2.2", 5433)],
        "shop": [core.NetworkGrant("shop", "192.0.2.2", 5433)],
    }
