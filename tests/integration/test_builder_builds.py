"""Builds through the real queue: nats-server with JetStream, runc, the real buildpacks.

A builder runs in-process (same event loop) against a nats-server of this
module's own, so the BUILDS stream and the `builders` consumer are not shared
with other suites. Jobs are submitted exactly as the controller does it:
source into the `sources` bucket, then `protocol.submit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import tarfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from builder.build import BuildRunner, Limits
from builder.cachecopy import LocalCaches
from builder.jobs import BuildQueue, QueueSettings
from builder.sandbox import RuncSandbox
from slipway import archive, engines, objstore
from slipway import buildproto as protocol
from slipway.cni import SandboxNetwork
from tests.harness import secure
from tests.harness.stacks import build_stack, run_stack
from tests.harness.wait import eventually_async

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def builder_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = secure.nats_engine(tmp_path_factory.mktemp("builder-nats"))
    server.start()
    yield f"nats://{server.host}:{server.port}"
    server.stop()


@dataclass
class Watch:
    """Everything published about one build, collected from core subscriptions."""

    build_id: str
    statuses: list[protocol.BuildStatus] = field(default_factory=list)
    lines: list[protocol.OutputLine] = field(default_factory=list)

    @property
    def final(self) -> protocol.BuildStatus | None:
        done = [s for s in self.statuses if s.status != protocol.RUNNING]
        return done[-1] if done else None

    @property
    def text(self) -> str:
        return "\n".join(line.line for line in self.lines)


class Client:
    """The controller's side of the protocol, as a test needs it."""

    def __init__(  # type: ignore[no-untyped-def]
        self, nc, stores: objstore.ObjectStores, tmp: Path, sandbox: RuncSandbox | None = None
    ) -> None:
        self.sandbox = sandbox
        self.nc = nc
        self.js = nc.jetstream()
        self.stores = stores
        self.tmp = tmp

    async def upload_dir(self, app_dir: Path) -> str:
        source = f"src-{uuid.uuid4().hex[:12]}"
        packed = await archive.pack_source(app_dir, self.tmp / f"{source}.tgz")
        await self.stores.put_file(objstore.SOURCES, source, packed.path)
        return source

    async def upload_file(self, path: Path) -> str:
        source = f"src-{uuid.uuid4().hex[:12]}"
        await self.stores.put_file(objstore.SOURCES, source, path)
        return source

    async def watch(self, build_id: str) -> Watch:
        w = Watch(build_id)

        async def on_status(msg) -> None:  # type: ignore[no-untyped-def]
            w.statuses.append(protocol.BuildStatus.decode(msg.data))

        async def on_output(msg) -> None:  # type: ignore[no-untyped-def]
            w.lines.append(protocol.OutputLine.decode(msg.data))

        await self.nc.subscribe(protocol.status_subject(build_id), cb=on_status)
        await self.nc.subscribe(protocol.output_subject(build_id), cb=on_output)
        await self.nc.flush()
        return w

    async def build(
        self,
        app: str,
        source: str,
        *,
        buildpacks: list[str] | None = None,
        config: dict[str, str] | None = None,
        timeout: float = 180.0,
    ) -> Watch:
        build_id = f"b-{uuid.uuid4().hex[:12]}"
        w = await self.watch(build_id)
        job = protocol.BuildJob(build_id, app, source, buildpacks or [], config or {})
        await protocol.submit(self.js, job)

        async def finished() -> bool:
            return w.final is not None

        await eventually_async(finished, timeout=timeout, interval=0.1)
        return w


@pytest.fixture
def limits() -> Limits:
    """Overridden per test with @pytest.mark.parametrize("limits", [Limits(...)])."""
    return Limits(build_timeout=300)


@pytest.fixture
async def client(builder_nats_url: str, tmp_path: Path, limits: Limits) -> AsyncIterator[Client]:
    nc = await secure.nats_connect([builder_nats_url], name="builder-test")
    stores = objstore.ObjectStores(nc.jetstream())
    await stores.ensure_buckets()
    state = tmp_path / "builder"
    # As the daemon runs it: every step in a network namespace of its own.
    network = SandboxNetwork(state / "net")
    sandbox = RuncSandbox(state / "sandbox", build_stack(state), network=network)
    await sandbox.prepare()
    runner = BuildRunner(stores, sandbox, state / "builds", limits, LocalCaches(state / "caches"))
    queue = BuildQueue(nc, runner, name="test-builder", settings=QueueSettings())
    task = asyncio.create_task(queue.run())
    try:
        yield Client(nc, stores, tmp_path, sandbox)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await nc.close()
        await network.destroy()


async def slug_names(c: Client, status: protocol.BuildStatus) -> list[str]:
    assert status.slug is not None
    dest = c.tmp / f"slug-{status.slug['digest'][:8]}.tgz"
    await c.stores.get_file(objstore.SLUGS, status.slug["digest"], dest)
    assert archive.sha256_file(dest) == status.slug["digest"]
    # Slugs pass the strictest check (no absolute symlinks either).
    archive.check_archive(dest)
    with tarfile.open(dest) as tar:
        return tar.getnames()


async def serve_slug(c: Client, status: protocol.BuildStatus, process: str) -> str:
    """Run a process type of the slug on the stack, as a dyno would; return GET / body."""
    assert status.slug is not None and c.sandbox is not None
    # A sandbox on the host's network and the run image: this test reaches the
    # "dyno" at 127.0.0.1:PORT (build steps have networks of their own, without
    # port mappings).
    # A directory per slug served: a test may serve several.
    root = c.tmp / f"serve-{status.slug['digest'][:12]}-{uuid.uuid4().hex[:6]}"
    sandbox = RuncSandbox(root / "sandbox", run_stack(root / "sandbox"))
    await sandbox.prepare()
    tgz = root / "dyno-slug.tgz"
    await c.stores.get_file(objstore.SLUGS, status.slug["digest"], tgz)
    app_dir, tmp_dir = root / "dyno-app", root / "dyno-tmp"
    archive.unpack(tgz, app_dir, allow_absolute_symlinks=True, owner=(sandbox.uid, sandbox.gid))
    tmp_dir.mkdir()
    tmp_dir.chmod(0o1777)
    port = engines.free_port()
    script = 'for f in /app/.profile.d/*.sh; do . "$f"; done; exec ' + status.process_types[process]
    output: list[str] = []

    async def keep(line: str) -> None:
        output.append(line)

    dyno = asyncio.create_task(
        sandbox.run(
            ["/bin/bash", "-c", script],
            app_dir=app_dir,
            tmp_dir=tmp_dir,
            env={"PORT": str(port), "HOME": "/app"},
            on_line=keep,
            timeout=60,
        )
    )

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
            return str(resp.read().decode())

    async def answered() -> str:
        assert not dyno.done(), output
        try:
            return await asyncio.to_thread(get)
        except OSError:
            return ""

    try:
        return await eventually_async(answered, timeout=30, interval=0.2)
    finally:
        dyno.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dyno


async def test_python_app_builds_and_second_build_uses_cache(
    client: Client, tmp_path: Path
) -> None:
    app = f"py-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    first = await client.build(app, await client.upload_dir(FIXTURES / "python-app"))
    cold = time.monotonic() - t0
    assert first.final is not None and first.final.status == protocol.SUCCEEDED, first.text
    assert first.final.process_types == {"web": "python server.py"}
    assert first.final.slug is not None and first.final.slug["stack"] == "slipway-24"
    assert first.final.buildpacks == ["python"]
    assert "-----> Python app detected" in first.text
    assert "No build cache for this app yet" in first.text
    names = await slug_names(client, first.final)
    assert "server.py" in names and ".profile.d/python.sh" in names
    assert any(n.startswith(".venv/lib/python3") and n.endswith("six.py") for n in names)
    assert not any(n.startswith("docs") for n in names), ".slugignore was not applied"
    assert await client.stores.exists(objstore.CACHES, app)
    assert "hello from python-app (six 1.16.0)" in await serve_slug(client, first.final, "web")

    t0 = time.monotonic()
    second = await client.build(app, await client.upload_dir(FIXTURES / "python-app"))
    warm = time.monotonic() - t0
    assert second.final is not None and second.final.status == protocol.SUCCEEDED, second.text
    assert "-----> Restoring build cache" in second.text
    assert "Restoring the virtualenv from the build cache (requirements.txt unchanged)" in (
        second.text
    )
    assert "-----> Build cache unchanged" in second.text  # not packed and stored again
    assert "copy kept on this builder" in second.text  # not fetched again either
    assert "hello from python-app (six 1.16.0)" in await serve_slug(client, second.final, "web")
    print(f"\npython-app build times: cold {cold:.1f}s, warm {warm:.1f}s")

    # Changed requirements: the cached virtualenv is not reused, the wheels are.
    changed = tmp_path / "python-app"
    shutil.copytree(FIXTURES / "python-app", changed)
    with (changed / "requirements.txt").open("a") as f:
        f.write("# pinned on purpose\n")
    third = await client.build(app, await client.upload_dir(changed))
    assert third.final is not None and third.final.status == protocol.SUCCEEDED, third.text
    assert "Restoring the virtualenv" not in third.text
    assert "-----> Saving build cache" in third.text
    assert "hello from python-app (six 1.16.0)" in await serve_slug(client, third.final, "web")


async def test_node_app_gets_default_web_process(client: Client) -> None:
    w = await client.build("node-app", await client.upload_dir(FIXTURES / "node-app"))
    assert w.final is not None and w.final.status == protocol.SUCCEEDED, w.text
    assert w.final.process_types == {"web": "npm start"}
    assert "npm ci (lock file found)" in w.text
    names = await slug_names(client, w.final)
    assert "node_modules/ms/index.js" in names and ".profile.d/nodejs.sh" in names
    assert "ms says 1m = 60000 ms" in await serve_slug(client, w.final, "web")

    again = await client.build("node-app", await client.upload_dir(FIXTURES / "node-app"))
    assert again.final is not None and again.final.status == protocol.SUCCEEDED, again.text
    assert "Using cached downloads from the previous build" in again.text
    assert "Restoring node_modules from the build cache" in again.text
    assert "npm ci" not in again.text
    assert "ms says 1m = 60000 ms" in await serve_slug(client, again.final, "web")


async def test_go_app_builds_every_main_package_with_the_stacks_go(client: Client) -> None:
    w = await client.build("go-app", await client.upload_dir(FIXTURES / "go-app"))
    assert w.final is not None and w.final.status == protocol.SUCCEEDED, w.text
    assert w.final.buildpacks == ["go"]
    assert "Using go1.19" in w.text  # go.mod's go 1.19: the stack's go will do
    assert w.final.process_types == {"web": "hello"}  # the module's last path element
    names = await slug_names(client, w.final)
    assert "bin/hello" in names and "bin/tick" in names
    assert "hello from go1.19" in await serve_slug(client, w.final, "web")

    again = await client.build("go-app", await client.upload_dir(FIXTURES / "go-app"))
    assert again.final is not None and again.final.status == protocol.SUCCEEDED, again.text
    assert "Modules and build cache from the previous build" in again.text


async def test_procfile_app_keeps_release_command(client: Client) -> None:
    w = await client.build("proc-app", await client.upload_dir(FIXTURES / "procfile-app"))
    assert w.final is not None and w.final.status == protocol.SUCCEEDED, w.text
    assert w.final.buildpacks == ["procfile"]
    assert set(w.final.process_types) == {"web", "worker"}
    assert w.final.process_types["web"] == "./serve.sh"
    assert w.final.release_command == 'echo "release phase ran"'


async def test_custom_local_buildpack_is_used(client: Client) -> None:
    pack = str(FIXTURES / "custom-buildpack")
    w = await client.build(
        "hello-app",
        await client.upload_dir(FIXTURES / "hello-app"),
        buildpacks=[pack],
        config={"GREETING_SUFFIX": "!"},
    )
    assert w.final is not None and w.final.status == protocol.SUCCEEDED, w.text
    assert w.final.buildpacks == [pack]
    assert "-----> Custom hello buildpack" in w.text
    assert "config var GREETING_SUFFIX=!" in w.text
    assert "STACK=slipway-24" in w.text
    # Procfile wins for worker; the buildpack's default fills in web.
    assert w.final.process_types == {"web": "./bin/hello", "worker": "./bin/hello --loop"}
    assert "custom-marker.txt" in await slug_names(client, w.final)


async def test_buildpack_from_git_url(client: Client, tmp_path: Path) -> None:
    repo = tmp_path / "bp-repo"
    shutil.copytree(FIXTURES / "custom-buildpack", repo)
    for args in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "buildpack"],
    ):
        proc = await asyncio.create_subprocess_exec("git", "-C", str(repo), *args)
        assert await proc.wait() == 0
    spec = f"file://{repo}"
    w = await client.build(
        "git-bp-app", await client.upload_dir(FIXTURES / "hello-app"), buildpacks=[spec]
    )
    assert w.final is not None and w.final.status == protocol.SUCCEEDED, w.text
    assert w.final.buildpacks == [spec]
    assert "-----> Custom hello buildpack" in w.text


async def test_buildpack_from_tarball_url(client: Client, tmp_path: Path) -> None:
    tgz = tmp_path / "hello-buildpack.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        # wrapped in one top-level directory, as release tarballs usually are
        tar.add(FIXTURES / "custom-buildpack", arcname="hello-buildpack-1.0")
    spec = f"file://{tgz}"
    w = await client.build(
        "tgz-bp-app", await client.upload_dir(FIXTURES / "hello-app"), buildpacks=[spec]
    )
    assert w.final is not None and w.final.status == protocol.SUCCEEDED, w.text
    assert "-----> Custom hello buildpack" in w.text


@pytest.mark.parametrize("limits", [Limits(build_timeout=2)])
async def test_compile_time_limit(client: Client) -> None:
    w = await client.build(
        "slow-app",
        await client.upload_dir(FIXTURES / "hello-app"),
        buildpacks=[str(FIXTURES / "slow-buildpack")],
    )
    assert w.final is not None and w.final.status == protocol.FAILED, w.text
    assert "Compile exceeded the time limit of" in (w.final.error or "")
    assert "       step 1" in w.text  # output up to the limit is kept


@pytest.mark.parametrize("limits", [Limits(slug_warn_bytes=1, slug_max_bytes=100)])
async def test_slug_over_the_limit_fails(client: Client) -> None:
    w = await client.build("proc-big", await client.upload_dir(FIXTURES / "procfile-app"))
    assert w.final is not None and w.final.status == protocol.FAILED, w.text
    assert "exceeds the limit of 100 bytes" in (w.final.error or "")


async def test_no_buildpack_detects_lists_what_was_tried(client: Client, tmp_path: Path) -> None:
    app_dir = tmp_path / "plain"
    app_dir.mkdir()
    (app_dir / "README").write_text("nothing to build here\n")
    w = await client.build("plain-app", await client.upload_dir(app_dir))
    assert w.final is not None and w.final.status == protocol.FAILED
    assert w.final.error is not None
    assert "Tried: python, nodejs, go, java, procfile" in w.final.error
    assert "Tried: python, nodejs, go, java, procfile" in w.text


async def test_compile_error_keeps_buildpack_output(client: Client, tmp_path: Path) -> None:
    app_dir = tmp_path / "broken"
    shutil.copytree(FIXTURES / "python-app", app_dir)
    (app_dir / "requirements.txt").write_text("slipway-no-such-package-4f1d==0.0.1\n")
    w = await client.build("broken-app", await client.upload_dir(app_dir))
    assert w.final is not None and w.final.status == protocol.FAILED
    assert "bin/compile failed" in (w.final.error or "")
    # pip's own explanation reaches the user, indented under the step line.
    assert "-----> Downloading dependencies with pip" in w.text
    assert "       ERROR: No matching distribution found for slipway-no-such-package-4f1d" in w.text


async def test_runtime_mismatch_fails_clearly(client: Client, tmp_path: Path) -> None:
    app_dir = tmp_path / "old"
    shutil.copytree(FIXTURES / "python-app", app_dir)
    (app_dir / "runtime.txt").write_text("python-2.7.18\n")
    w = await client.build("old-app", await client.upload_dir(app_dir))
    assert w.final is not None and w.final.status == protocol.FAILED
    assert "runtime.txt asks for Python 2.7.18" in w.text
    assert "only 3.11.x can be used" in w.text


async def test_tarball_with_dotdot_is_refused(client: Client, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tgz"
    with tarfile.open(bad, "w:gz") as tar:
        for name, data in (("Procfile", b"web: true\n"), ("../escaped.txt", b"gotcha\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    w = await client.build("evil-app", await client.upload_file(bad))
    assert w.final is not None and w.final.status == protocol.FAILED
    assert "Source archive refused" in (w.final.error or "")
    assert "'..'" in (w.final.error or "")
    assert not (tmp_path / "builder" / "builds" / "escaped.txt").exists()
    assert not any((tmp_path / "builder").rglob("escaped.txt"))


def counting_buildpack(root: Path) -> Path:
    """A buildpack that prints the counter in its cache and stores it plus one."""
    pack = root / "counting-buildpack"
    (pack / "bin").mkdir(parents=True)
    scripts = {
        "detect": "echo Counting\n",
        "compile": (
            'printf "cache counter: %s\\n" "$(cat "$2/counter" 2>/dev/null || echo none)"\n'
            'echo $(( $(cat "$2/counter" 2>/dev/null || echo 0) + 1 )) > "$2/counter"\n'
        ),
        "release": "echo '--- {}'\n",
    }
    for name, body in scripts.items():
        path = pack / "bin" / name
        path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(0o755)
    return pack


async def test_builder_reuses_its_copy_of_the_cache_only_while_identical(
    client: Client, tmp_path: Path
) -> None:
    app = f"cnt-{uuid.uuid4().hex[:6]}"
    pack = [str(counting_buildpack(tmp_path))]
    source = await client.upload_dir(FIXTURES / "hello-app")

    first = await client.build(app, source, buildpacks=pack)
    assert "cache counter: none" in first.text, first.text
    second = await client.build(app, source, buildpacks=pack)
    assert "cache counter: 1" in second.text, second.text
    assert "copy kept on this builder" in second.text

    # Another builder saved a newer cache meanwhile: this builder's copy is stale.
    other = tmp_path / "other-cache"
    other.mkdir()
    (other / "counter").write_text("7\n")
    packed = archive.pack_dir(other, tmp_path / "other.tgz", what="build cache")
    await client.stores.put_file(objstore.CACHES, app, packed.path)
    third = await client.build(app, source, buildpacks=pack)
    assert "cache counter: 7" in third.text, third.text
    assert "copy kept on this builder" not in third.text
    fourth = await client.build(app, source, buildpacks=pack)
    assert "cache counter: 8" in fourth.text, fourth.text

    # A purged cache is gone for this builder too.
    await client.stores.delete(objstore.CACHES, app)
    fifth = await client.build(app, source, buildpacks=pack)
    assert "No build cache for this app yet" in fifth.text
    assert "cache counter: none" in fifth.text, fifth.text
