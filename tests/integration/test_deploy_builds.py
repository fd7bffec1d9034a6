"""`slipway deploy` end to end: the real CLI, a real controller, nats-server, etcd and builder.

The module has its own nats-server, so its BUILDS queue and `builders` consumer
(ack_wait 3 s, for the failover test) are not shared with other suites; one
`slipway-builder` process serves the module. Each test gets its own controller
on its own etcd prefix.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from slipway import archive, buildproto, objstore
from slipway.client import Client
from slipway.v1 import platform_pb2 as pb
from slipway.v1 import platform_pb2_grpc
from tests.harness import secure
from tests.harness.controller import ControllerProcess
from tests.harness.wait import eventually
from tests.integration.test_builder_failover import BuilderProcess

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def deploy_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = secure.nats_engine(tmp_path_factory.mktemp("deploy-nats"))
    server.start()
    yield f"nats://{server.host}:{server.port}"
    server.stop()


@pytest.fixture(scope="module")
def builder(deploy_nats: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    proc = BuilderProcess("deploy-builder", deploy_nats, tmp_path_factory.mktemp("b") / "b1")
    yield
    asyncio.run(proc.cleanup())


def start_controller(
    etcd_endpoint: str, prefix: str, nats_url: str, workdir: Path, **settings: object
) -> ControllerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "controller.toml"
    config.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
    proc = ControllerProcess(
        etcd_endpoint, prefix, workdir, nats_url, extra_args=["--config", str(config)]
    )
    proc.start()
    return proc


@pytest.fixture
def ctl(
    etcd_endpoint: str, etcd_prefix: str, deploy_nats: str, tmp_path: Path
) -> Iterator[ControllerProcess]:
    proc = start_controller(
        etcd_endpoint, etcd_prefix, deploy_nats, tmp_path / "controller", max_source_mb=1
    )
    yield proc
    proc.stop()


def client_of(ctl: ControllerProcess) -> Client:
    return ctl.client()


def show(title: str, result: object) -> None:
    """Print what the user saw (pytest -s shows it; a failure shows it anyway)."""
    print(f"===== {title}\n{getattr(result, 'stdout', '')}{getattr(result, 'stderr', '')}")


def latest_build(c: Client, app: str) -> pb.Build:
    builds = list(c.list_builds(app).builds)
    assert builds
    return builds[0]


def test_deploy_python_app_twice_uses_cache(
    ctl: ControllerProcess, builder: None, deploy_nats: str, tmp_path: Path
) -> None:
    ctl.cli("apps:create", "pyapp", check=True)
    src = tmp_path / "python-app"
    shutil.copytree(FIXTURES / "python-app", src)

    started = time.monotonic()
    first = ctl.cli("deploy", str(src), "-a", "pyapp", timeout=300)
    cold = time.monotonic() - started
    show(f"first deploy ({cold:.1f}s)", first)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "-----> " in first.stdout
    assert "Released v2" in first.stdout

    c = client_of(ctl)
    release = c.get_release("pyapp", 2).release
    assert release.process_types["web"] == "python server.py"
    assert release.description.startswith("Deploy ")
    assert release.slug.digest
    build = latest_build(c, "pyapp")
    assert build.status == pb.BUILD_STATUS_SUCCEEDED
    assert build.release == 2 and build.slug_digest == release.slug.digest
    assert build.attempts == 1

    async def slug_stored() -> bool:
        nc = await secure.nats_connect([deploy_nats])
        try:
            return await objstore.ObjectStores(nc.jetstream()).exists(
                objstore.SLUGS, release.slug.digest
            )
        finally:
            await nc.close()

    assert asyncio.run(slug_stored())

    (src / "server.py").write_text((src / "server.py").read_text() + "\n# second deploy\n")
    started = time.monotonic()
    second = ctl.cli("deploy", str(src), "-a", "pyapp", timeout=300)
    warm = time.monotonic() - started
    show(f"second deploy ({warm:.1f}s)", second)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Released v3" in second.stdout
    assert "cache" in second.stdout.lower()
    print(f"cold deploy {cold:.1f}s, warm deploy {warm:.1f}s")

    listing = ctl.cli("builds", "-a", "pyapp", check=True)
    assert listing.stdout.count("succeeded") == 2
    replay = ctl.cli("builds:output", build.id, "-a", "pyapp", check=True)
    assert "-----> " in replay.stdout
    info = ctl.cli("builds:info", build.id, "-a", "pyapp", check=True)
    assert "v2" in info.stdout


def test_no_buildpack_detects(ctl: ControllerProcess, builder: None, tmp_path: Path) -> None:
    ctl.cli("apps:create", "nothing", check=True)
    src = tmp_path / "empty-app"
    src.mkdir()
    (src / "README").write_text("nothing to build here\n")
    result = ctl.cli("deploy", str(src), "-a", "nothing", timeout=120)
    show("undetectable deploy", result)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    for name in ("python", "nodejs", "go", "java", "procfile"):
        assert name in text
    c = client_of(ctl)
    assert [r.version for r in c.list_releases("nothing").releases] == [1]
    assert latest_build(c, "nothing").status == pb.BUILD_STATUS_FAILED


def test_custom_buildpack_set(ctl: ControllerProcess, builder: None) -> None:
    ctl.cli("apps:create", "custom", check=True)
    pack = str(FIXTURES / "custom-buildpack")
    ctl.cli("buildpacks:set", pack, "-a", "custom", check=True)
    listing = ctl.cli("buildpacks", "-a", "custom", "--json", check=True)
    assert pack in listing.stdout
    result = ctl.cli("deploy", str(FIXTURES / "hello-app"), "-a", "custom", timeout=120)
    show("custom buildpack deploy", result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Custom hello buildpack" in result.stdout
    release = client_of(ctl).get_release("custom", 0).release
    assert release.version == 2
    assert release.process_types["worker"] == "./bin/hello --loop"

    ctl.cli("buildpacks:add", "procfile", "-a", "custom", check=True)
    assert client_of(ctl).set_buildpacks("custom", pb.BUILDPACKS_ACTION_UNSPECIFIED).buildpacks == [
        pack,
        "procfile",
    ]
    ctl.cli("buildpacks:clear", "-a", "custom", check=True)
    assert not ctl.cli("buildpacks", "-a", "custom", "--json", check=True).stdout.count(pack)
    refused = ctl.cli("builds:cache:purge", "-a", "custom", "--confirm", "other")
    assert refused.returncode != 0 and "--confirm custom" in refused.stderr
    ctl.cli("builds:cache:purge", "-a", "custom", "--confirm", "custom", check=True)


def test_builds_run_on_the_stack_image_and_stack_set_changes_it(
    ctl: ControllerProcess, builder: None
) -> None:
    ctl.cli("apps:create", "probe", check=True)
    ctl.cli("buildpacks:set", str(FIXTURES / "stack-probe-buildpack"), "-a", "probe", check=True)
    assert "slipway-24" in ctl.cli("stack", "-a", "probe", check=True).stdout
    result = ctl.cli("deploy", str(FIXTURES / "hello-app"), "-a", "probe", timeout=180)
    show("stack probe deploy", result)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Probing stack slipway-24" in out
    assert "os: Debian GNU/Linux 12 (bookworm)" in out
    # The stack supplies every language's toolchain, whatever the host has.
    assert "python: Python 3.11" in out and "node: v18" in out
    assert "go: go version go1.19" in out and 'java: openjdk version "17' in out
    mounts = dict(
        line.removeprefix("mount: ").split(" from ", 1)
        for line in (raw.strip() for raw in out.splitlines())
        if line.startswith("mount: ")
    )
    assert "slipway-24-build-" in mounts["/"], mounts["/"]
    # Nothing of the host's system shows through: no /usr, /bin, /lib or /etc binds
    # but copies of the operator's own CAs, where there are some.
    host_system = [p for p in mounts if p.split("/")[1:2] in (["usr"], ["bin"], ["lib"], ["sbin"])]
    assert set(host_system) <= {"/usr/local/share/ca-certificates"}, host_system
    # Of /etc, only the resolver and (where the operator added CAs) the CA bundle.
    etc = {p for p in mounts if p.startswith("/etc")}
    assert "/etc/resolv.conf" in etc
    assert etc <= {"/etc/resolv.conf", "/etc/ssl/certs/ca-certificates.crt"}, etc
    assert client_of(ctl).get_release("probe", 2).release.slug.stack == "slipway-24"

    refused = ctl.cli("stack:set", "cedar-14", "-a", "probe")
    assert refused.returncode != 0 and "choose from host, slipway-24" in refused.stderr
    assert "redeploy" in ctl.cli("stack:set", "host", "-a", "probe", check=True).stdout
    again = ctl.cli("deploy", str(FIXTURES / "hello-app"), "-a", "probe", timeout=180)
    assert again.returncode != 0
    assert "stack host is not available on this builder (it builds on slipway-24)" in (
        again.stdout + again.stderr
    )
    trail = ctl.cli("audit", "-a", "probe", check=True).stdout
    assert "SetStack" in trail and "host" in trail


def _upload_raw(ctl: ControllerProcess, app: str, data: bytes) -> grpc.RpcError:
    """Upload bytes through the API (no CLI packing); return the error it must raise."""
    import hashlib

    channel = grpc.secure_channel(ctl.address, secure.channel_credentials())
    stub = platform_pb2_grpc.PlatformServiceStub(channel)
    meta = pb.UploadSourceMetadata(app=app, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    chunks = [data[i : i + 512 * 1024] for i in range(0, len(data), 512 * 1024)]
    messages = [pb.UploadSourceRequest(metadata=meta)] + [
        pb.UploadSourceRequest(chunk=c) for c in chunks
    ]
    try:
        stub.UploadSource(
            iter(messages), timeout=30, metadata=[("authorization", f"Bearer {ctl.token}")]
        )
    except grpc.RpcError as exc:
        return exc
    finally:
        channel.close()
    raise AssertionError("the upload was accepted")


def test_dotdot_tarball_refused_before_anything(ctl: ControllerProcess, deploy_nats: str) -> None:
    ctl.cli("apps:create", "evil", check=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        payload = b"owned\n"
        info = tarfile.TarInfo("../../escape.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))

    async def jobs_before() -> int:
        nc = await secure.nats_connect([deploy_nats])
        try:
            js = nc.jetstream()
            await buildproto.ensure_streams(js)
            return int((await js.stream_info(buildproto.STREAM)).state.messages)
        finally:
            await nc.close()

    queued = asyncio.run(jobs_before())
    exc = _upload_raw(ctl, "evil", buf.getvalue())
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert ".." in (exc.details() or "")  # type: ignore[attr-defined]
    assert not list(client_of(ctl).list_builds("evil").builds)
    assert asyncio.run(jobs_before()) == queued
    assert not (Path("/") / "escape.txt").exists()


def test_oversized_upload_names_the_limit(ctl: ControllerProcess, tmp_path: Path) -> None:
    ctl.cli("apps:create", "huge", check=True)
    src = tmp_path / "huge-app"
    src.mkdir()
    (src / "Procfile").write_text("web: true\n")
    # Incompressible, so the tarball stays over the 1 MB limit this controller has.
    (src / "blob.bin").write_bytes(__import__("os").urandom(2 * 1024 * 1024))
    result = ctl.cli("deploy", str(src), "-a", "huge", timeout=60)
    show("oversized deploy", result)
    assert result.returncode != 0
    assert "the limit is 1.0 MB" in result.stderr
    assert not list(client_of(ctl).list_builds("huge").builds)
    _ = archive  # the CLI packs with slipway.archive; nothing else is needed here


def test_build_output_of_unknown_build(ctl: ControllerProcess) -> None:
    ctl.cli("apps:create", "quiet", check=True)
    result = ctl.cli("builds:output", "b-000000000000", "-a", "quiet")
    assert result.returncode != 0 and "not found" in result.stderr
    eventually(lambda: ctl.cli("builds", "-a", "quiet").returncode == 0, timeout=10)
