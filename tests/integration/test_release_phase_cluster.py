"""The release phase runs for every new release, not only for deploys.

A real controller and a real agent (runc). The slug comes from the test helper
and its release is made through the API with a ``release`` entry, as a build's
would be; then config changes and a rollback make releases of the same slug.
Each one waits for ``release.N`` to exit 0 before the dynos move to it; one whose
release command fails is marked failed and the dynos stay where they were.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from slipway.v1 import types_pb2
from tests.harness.cluster import LocalCluster
from tests.harness.slugs import upload_slug
from tests.harness.wait import eventually
from tests.integration.test_deploy_cluster import web_body

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

APP = "phased"
RELEASE_COMMAND = 'echo "migrating with MIGRATE_OK=$MIGRATE_OK"; test "$MIGRATE_OK" = 1'


def current(cluster: LocalCluster) -> int:
    with cluster.client() as client:
        return int(client.get_app(APP).app.current_release)


def release_status(cluster: LocalCluster, version: int) -> types_pb2.Release:
    with cluster.client() as client:
        return client.get_release(APP, version).release


def logs(cluster: LocalCluster) -> str:
    out = cluster.controller.cli("logs", "-a", APP, "-n", "1500")
    assert out.returncode == 0, out.stderr
    return out.stdout


def greeting(cluster: LocalCluster, version: int) -> str | None:
    """The GREETING the up web dyno on ``version`` answers with ("" while there is none)."""
    body = web_body(cluster, APP, version)
    return json.loads(body)["greeting"] if body else ""


def test_config_changes_and_rollbacks_run_the_release_phase(cluster: LocalCluster) -> None:
    cluster.add_agent("node-1")
    cli = cluster.controller.cli
    cli("apps:create", APP, check=True)
    cli("config:set", "-a", APP, "MIGRATE_OK=1", "GREETING=one", check=True)  # v2: no slug yet
    slug = asyncio.run(upload_slug(cluster.controller.nats_url))
    with cluster.client() as client:
        v3 = client.create_release(
            APP,
            types_pb2.SlugRef(digest=slug.digest, size_bytes=slug.size, stack="slipway-24"),
            {"web": slug.process_types["web"], "release": RELEASE_COMMAND},
        ).release
    assert (v3.version, v3.status) == (3, types_pb2.RELEASE_STATUS_PENDING)
    eventually(lambda: current(cluster) == 3, 90, 0.5)
    assert eventually(lambda: greeting(cluster, 3), 60, 0.5) == "one"

    # A config change: a new release of the same slug, live once release.4 exits 0.
    out = cli("config:set", "-a", APP, "GREETING=two", check=True).stdout
    assert "done, v4 (release phase running)" in out
    eventually(lambda: current(cluster) == 4, 90, 0.5)
    assert eventually(lambda: greeting(cluster, 4), 60, 0.5) == "two"
    eventually(lambda: "app[release.4]: migrating with MIGRATE_OK=1" in logs(cluster), 30, 0.5)

    # A release command that fails: v5 is marked failed, the dynos stay on v4.
    out = cli("config:set", "-a", APP, "MIGRATE_OK=0", check=True).stdout
    assert "done, v5 (release phase running)" in out
    v5 = eventually(
        lambda: (r := release_status(cluster, 5)).status != types_pb2.RELEASE_STATUS_PENDING and r,
        90,
        0.5,
    )
    assert v5.status == types_pb2.RELEASE_STATUS_FAILED
    assert "release command exited with status 1" in v5.description
    assert current(cluster) == 4
    assert greeting(cluster, 4) == "two", "the v4 dynos keep serving"
    with cluster.client() as client:
        assert {d.release for d in client.list_dynos(APP).dynos if d.type == "web"} == {4}
    shown = eventually(lambda: (text := logs(cluster)) and "Release v5 failed" in text and text)
    assert "app[release.5]: migrating with MIGRATE_OK=0" in shown
    assert "dynos stay on v4" in shown

    # A rollback is a release too: v6 (v3's slug and config) runs the phase first.
    out = cli("releases:rollback", "-a", APP, "v3", check=True).stdout
    assert "done, v6 (release phase running)" in out
    eventually(lambda: current(cluster) == 6, 90, 0.5)
    assert eventually(lambda: greeting(cluster, 6), 60, 0.5) == "one"
    eventually(lambda: "app[release.6]: migrating with MIGRATE_OK=1" in logs(cluster), 30, 0.5)
