"""Lost state: etcd and the object store are destroyed, new ones are restored
from a backup, and every app comes back with its releases, config vars,
formation and slugs.

Real etcd and nats-server (our own, so the test can destroy them), a real
controller and the real CLIs.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from slipway import engines
from slipway.v1 import types_pb2
from tests.harness import secure
from tests.harness.controller import BIN, ControllerProcess
from tests.harness.slugs import upload_slug

pytestmark = pytest.mark.integration

APPS = ("shop", "blog")


def admin(ctl: ControllerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "slipway-controller"), *args],
        env=ctl.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def seen_state(ctl: ControllerProcess) -> dict[str, object]:
    """What a user sees of every app: releases, config values and formation."""
    state: dict[str, object] = {}
    for app in APPS:
        releases = json.loads(ctl.cli("releases", "-a", app, "--json", check=True).stdout)
        state[app] = {
            "releases": [(r["version"], r["description"]) for r in releases],
            "config": json.loads(ctl.cli("config", "-a", app, "--json", check=True).stdout),
            "formation": json.loads(ctl.cli("ps:scale", "-a", app, "--json", check=True).stdout),
        }
    state["apps"] = sorted(
        a["name"] for a in json.loads(ctl.cli("apps", "--json", check=True).stdout)
    )
    return state


def test_etcd_and_object_store_destroyed_and_restored_from_a_backup(
    tmp_path: Path, etcd_prefix: str
) -> None:
    first, first_nats = (
        secure.etcd_engine(tmp_path / "etcd-1"),
        secure.nats_engine(tmp_path / "nats-1"),
    )
    second, second_nats = (
        secure.etcd_engine(tmp_path / "etcd-2"),
        secure.nats_engine(tmp_path / "nats-2"),
    )
    first.start()
    first_nats.start()
    secure.seal([f"{first.host}:{first.port}"], etcd_prefix)
    ctl = ControllerProcess(
        f"{first.host}:{first.port}", etcd_prefix, tmp_path / "controller", url(first_nats)
    )
    try:
        ctl.start()
        slug = asyncio.run(upload_slug(url(first_nats)))
        for app in APPS:
            ctl.cli("apps:create", app, check=True)
            ctl.cli("config:set", "-a", app, f"SECRET={app}-s3cret", "MODE=prod", check=True)
            with ctl.client() as client:
                client.create_release(
                    app,
                    types_pb2.SlugRef(digest=slug.digest, size_bytes=slug.size, stack="slipway-24"),
                    {"web": slug.process_types["web"], "worker": slug.process_types["worker"]},
                )
            ctl.cli("ps:scale", "-a", app, "web=2", "worker=1", check=True)
        ctl.cli("config:unset", "-a", "blog", "MODE", check=True)
        before = seen_state(ctl)

        archive = tmp_path / "backups" / "platform.tar.gz"
        made = admin(ctl, "backup", str(archive), "--with-slugs", "--json")
        assert made.returncode == 0, made.stderr
        report = json.loads(made.stdout)
        assert report["apps"] == sorted(APPS) and report["slugs_saved"] == 1
        assert report["missing"] == []
        assert archive.stat().st_mode & 0o077 == 0, "the backup holds secrets: owner only"

        # The loss: the controller stops, etcd and NATS die and their data is gone.
        ctl.stop()
        for engine in (first, first_nats):
            engine.kill()
            shutil.rmtree(engine.data_dir)
        second.start()
        second_nats.start()
        secure.seal([f"{second.host}:{second.port}"], etcd_prefix)
        ctl.etcd_endpoint, ctl.nats_url = f"{second.host}:{second.port}", url(second_nats)

        restored = admin(ctl, "restore", str(archive))
        assert restored.returncode == 0, restored.stderr
        assert "Restored 2 apps" in restored.stdout
        assert "1 slugs put back into the object store" in restored.stdout
        check = admin(ctl, "backup", str(tmp_path / "check.tar.gz"), "--json")
        assert json.loads(check.stdout)["missing"] == [], "every release's slug is back"
        again = admin(ctl, "restore", str(archive))
        assert again.returncode == 1 and "restore writes only into an empty platform" in (
            again.stderr
        )

        # The old token was restored too: the CLI keeps working as before.
        ctl.start()
        assert seen_state(ctl) == before
    finally:
        ctl.stop()
        for engine in (first, first_nats, second, second_nats):
            engine.stop()


def url(nats: engines.Engine) -> str:
    return f"nats://{nats.host}:{nats.port}"


def test_a_damaged_backup_is_refused_with_a_clear_error(
    tmp_path: Path, etcd_endpoint: str, etcd_prefix: str, nats_url: str
) -> None:
    ctl = ControllerProcess(etcd_endpoint, etcd_prefix, tmp_path / "controller", nats_url)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a backup at all")
    result = admin(ctl, "restore", str(junk))
    assert result.returncode == 1
    assert "is not a Slipway backup" in result.stderr
