"""The sample apps under examples/, deployed on a clean platform the way a user
would (`slipway up`, `apps:create`, `deploy`), each serving its page through the
router; the Django one twice, the second time from the build cache."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.test_platform import Platform
from tests.harness.wait import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform.on_free_ports(tmp_path_factory.mktemp("samples"))
    p.start()
    try:
        yield p
    finally:
        p.stop()


def deploy(platform: Platform, app: str, sample: str) -> str:
    if app not in platform.cli("apps").stdout:
        platform.cli("apps:create", app)
    done = platform.cli("deploy", "-a", app, f"examples/{sample}", check=False, timeout=900)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    return out


def refused(platform: Platform, tmp_path: Path, app: str, files: dict[str, str]) -> str:
    """Deploy an app made of ``files``; it must fail. Returns what the user saw."""
    src = tmp_path / app
    src.mkdir()
    for name, text in files.items():
        (src / name).write_text(text)
    platform.cli("apps:create", app)
    done = platform.cli("deploy", "-a", app, str(src), check=False, timeout=300)
    assert done.returncode != 0, done.stdout
    return done.stdout + done.stderr


def page(platform: Platform, app: str, text: str, path: str = "/") -> str:
    found: list[str] = []

    def shows_it() -> bool:
        status, body = platform.http(app, path)
        found[:] = [body]
        return status == 200 and text in body

    assert eventually(shows_it, 90), found
    return found[0]


def test_django_with_whitenoise_manifest_storage(platform: Platform) -> None:
    out = deploy(platform, "shop", "django-whitenoise")
    assert "Running Django collectstatic" in out
    assert "Running release command: python manage.py migrate --noinput" in out
    body = page(platform, "shop", "<h1>Django with whitenoise</h1>")
    css = re.search(r'href="(/static/site\.[0-9a-f]{12}\.css)"', body)
    assert css, body  # the manifest's hashed name: collectstatic ran at build time
    status, sheet = platform.http("shop", css.group(1))
    assert status == 200 and "font-family" in sheet

    again = deploy(platform, "shop", "django-whitenoise")
    assert "from the build cache (requirements.txt unchanged)" in again
    page(platform, "shop", "<h1>Django with whitenoise</h1>")


def test_flask_with_poetry_leaves_dev_dependencies_out(platform: Platform) -> None:
    out = deploy(platform, "flask-poetry", "flask-poetry")
    assert "poetry lock file's main dependencies" in out
    page(platform, "flask-poetry", "dev dependencies installed: False")


def test_fastapi_with_uv(platform: Platform) -> None:
    out = deploy(platform, "fastapi-uv", "fastapi-uv")
    assert "uv lock file" in out
    page(platform, "fastapi-uv", "<h1>FastAPI with uv</h1>")
    assert '"status":"ok"' in page(platform, "fastapi-uv", "ok", "/health")


def test_python_with_the_built_in_postgres_and_a_release_phase_migration(
    platform: Platform, tmp_path: Path
) -> None:
    platform.cli("apps:create", "ledger")
    created = platform.cli("addons:create", "postgresql", "-a", "ledger", "--wait").stdout
    assert re.search(r"Created postgresql-\S+ as DATABASE", created), created
    config = json.loads(platform.cli("config", "-a", "ledger", "--json").stdout)
    url = urlsplit(config["DATABASE_URL"])
    assert url.scheme == "postgres" and "sslmode=require" in url.query, url

    out = deploy(platform, "ledger", "python-postgres")
    assert "release phase: table visits ready" in out
    first = json.loads(page(platform, "ledger", '"visits"', "/json"))
    assert first["tls"] is True and first["database"] == url.path.lstrip("/")
    second = json.loads(page(platform, "ledger", '"visits"', "/json"))
    assert second["visits"] > first["visits"]

    # An app the add-on is not attached to cannot even open a connection to it.
    probe = (
        "import socket; s = socket.socket(); s.settimeout(3); "
        f"print('PROBE', s.connect_ex(({url.hostname!r}, {url.port})))"
    )
    other = platform.cli("run", "-a", "flask-poetry", "--", "python", "-c", probe, timeout=120)
    # 11 (EAGAIN): the connect timed out, the firewall dropped it
    assert "PROBE 11" in other.stdout, other.stdout + other.stderr
    mine = platform.cli("run", "-a", "ledger", "--", "python", "-c", probe, timeout=120)
    assert "PROBE 0" in mine.stdout, mine.stdout + mine.stderr

    info = platform.cli("pg:info", "-a", "ledger").stdout
    assert "=== DATABASE_URL" in info and "Plan:" in info and "essential-0" in info, info
    assert re.search(r"Tables:\s+1\b", info), info
    counted = platform.cli("pg:psql", "-a", "ledger", "-c", "SELECT count(*) FROM visits").stdout
    assert re.search(r"^\s*\d+\s*$", counted, re.M), counted

    refused_rotate = platform.cli("pg:credentials:rotate", "-a", "ledger", check=False)
    assert refused_rotate.returncode == 1 and "--confirm ledger" in refused_rotate.stderr
    rotated = platform.cli("pg:credentials:rotate", "-a", "ledger", "--confirm", "ledger").stdout
    assert "released as v" in rotated, rotated
    new_url = json.loads(platform.cli("config", "-a", "ledger", "--json").stdout)["DATABASE_URL"]
    assert new_url != config["DATABASE_URL"]
    # The dynos restart on the new URL and count on; the old password opens nothing.
    page(platform, "ledger", '"visits"', "/json")
    stale = subprocess.run(
        ["psql", config["DATABASE_URL"], "-c", "SELECT 1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert stale.returncode != 0 and "password authentication failed" in stale.stderr, stale

    captured = platform.cli("pg:backups:capture", "-a", "ledger").stdout
    assert "----backup---> b001" in captured, captured
    platform.cli("pg:reset", "-a", "ledger", "--confirm", "ledger")
    assert re.search(r"Tables:\s+0\b", platform.cli("pg:info", "-a", "ledger").stdout)
    listed = platform.cli("pg:backups", "-a", "ledger").stdout
    assert re.search(r"^b001\s.*DATABASE_URL", listed, re.M), listed
    # The dump downloads whole, and holds the table pg:reset just dropped.
    dump = tmp_path / "ledger.dump"
    got = platform.cli("pg:backups:download", "-a", "ledger", "-o", str(dump))
    assert "Saved b001" in got.stderr, got.stderr
    (kept,) = json.loads(platform.cli("pg:backups", "-a", "ledger", "--json").stdout)
    assert dump.stat().st_size == int(kept["size_bytes"])
    assert kept["kept_in"] == "object store", kept  # slipway up gives the add-ons NATS
    listing = subprocess.run(
        ["pg_restore", "--list", str(dump)], capture_output=True, text=True, timeout=30
    )
    assert "TABLE public visits" in listing.stdout, listing.stdout + listing.stderr
    platform.cli("pg:backups:restore", "b001", "-a", "ledger", "--confirm", "ledger")
    assert re.search(r"Tables:\s+1\b", platform.cli("pg:info", "-a", "ledger").stdout)
    page(platform, "ledger", '"visits"', "/json")


def test_two_web_dynos_share_one_counter_in_the_built_in_redis(platform: Platform) -> None:
    platform.cli("apps:create", "hits")
    created = platform.cli("addons:create", "redis", "-a", "hits", "--wait").stdout
    assert re.search(r"Created redis-\S+ as REDIS", created), created
    url = urlsplit(json.loads(platform.cli("config", "-a", "hits", "--json").stdout)["REDIS_URL"])
    assert url.scheme == "rediss" and url.password and not url.username, url

    deploy(platform, "hits", "python-redis")
    platform.cli("ps:scale", "web=2", "-a", "hits")
    seen: dict[str, list[int]] = {}

    def both_dynos_counted() -> bool:
        got = json.loads(page(platform, "hits", '"hits"', "/json"))
        seen.setdefault(got["dyno"], []).append(got["hits"])
        return len(seen) == 2

    assert eventually(both_dynos_counted, 120), seen
    counts = sorted(n for ns in seen.values() for n in ns)
    assert len(set(counts)) == len(counts), seen  # one counter: no number given twice

    # An app the add-on is not attached to cannot even open a connection to it.
    probe = (
        "import socket; s = socket.socket(); s.settimeout(3); "
        f"print('PROBE', s.connect_ex(({url.hostname!r}, {url.port})))"
    )
    other = platform.cli("run", "-a", "flask-poetry", "--", "python", "-c", probe, timeout=120)
    assert "PROBE 11" in other.stdout, other.stdout + other.stderr

    info = platform.cli("redis:info", "-a", "hits").stdout
    assert "=== REDIS_URL" in info and "mini" in info and "noeviction" in info, info
    assert re.search(r"Keys:\s+1\b", info), info
    got = platform.cli("redis:cli", "-a", "hits", "-c", "GET hits", timeout=120).stdout
    assert re.search(r"^\d+\s*$", got, re.M) and int(got.split()[-1]) >= counts[-1], got

    set_policy = platform.cli("redis:maxmemory", "-a", "hits", "--policy", "allkeys-lru").stdout
    assert "allkeys-lru" in set_policy, set_policy
    assert "allkeys-lru" in platform.cli("redis:info", "-a", "hits").stdout
    reset = platform.cli("redis:credentials", "-a", "hits", "--reset", "--confirm", "hits").stdout
    assert "released as v" in reset, reset
    # The dynos restart on the new URL and count on from where they were.
    after = json.loads(page(platform, "hits", '"hits"', "/json"))
    assert after["hits"] > counts[-1]


def test_a_python_version_the_stack_lacks_fails_naming_what_it_has(
    platform: Platform, tmp_path: Path
) -> None:
    files = {
        "requirements.txt": "",
        "runtime.txt": "python-3.8.18\n",
        "Procfile": "web: python -m http.server $PORT\n",
    }
    out = refused(platform, tmp_path, "old-python", files)
    assert "asks for Python 3.8.18, but stack slipway-24 provides Python 3.11" in out


def test_a_yarn_release_the_registry_lacks_fails_naming_it(
    platform: Platform, tmp_path: Path
) -> None:
    files = {
        "package.json": '{"name": "no-such-yarn", "packageManager": "yarn@4.99.1"}\n',
        "yarn.lock": "__metadata:\n  version: 8\n",
    }
    out = refused(platform, tmp_path, "no-such-yarn", files)
    assert "yarn 4.99.1 could not be installed from the npm registry" in out


def test_go_with_a_module_dependency_and_the_toolchain_go_mod_asks_for(
    platform: Platform,
) -> None:
    out = deploy(platform, "go-web", "go-web")
    assert "Downloading go1.22." in out  # newer than the stack's go1.19: from the module proxy
    assert "Discovering process types: web" in out  # web: go-web, from bin/release
    body = page(platform, "go-web", "<h1>Go on Slipway</h1>")
    assert "go1.22." in body
    again = deploy(platform, "go-web", "go-web")
    assert "from the build cache" in again  # the toolchain is not downloaded twice


def test_a_go_version_nobody_supplies_fails_naming_what_there_is(
    platform: Platform, tmp_path: Path
) -> None:
    files = {
        "go.mod": "module example.com/future\n\n// +heroku goVersion go1.99\ngo 1.99\n",
        "main.go": "package main\n\nfunc main() {}\n",
    }
    out = refused(platform, tmp_path, "future-go", files)
    assert "go.mod asks for Go 1.99" in out and "go1.19" in out and "newest go1." in out


def test_java_with_maven_on_the_stacks_jdk(platform: Platform) -> None:
    out = deploy(platform, "java-maven", "java-maven")
    assert "Building with Maven (tests skipped)" in out
    assert "built target/web.jar" in out
    page(platform, "java-maven", "<h1>Java with Maven</h1><p>Java 17")
    again = deploy(platform, "java-maven", "java-maven")
    assert "Maven repository from the previous build" in again


def test_a_java_version_the_stack_lacks_fails_naming_what_it_has(
    platform: Platform, tmp_path: Path
) -> None:
    files = {"pom.xml": "<project/>\n", "system.properties": "java.runtime.version=21\n"}
    out = refused(platform, tmp_path, "java-21", files)
    assert "asks for Java 21, but stack slipway-24 provides Java 17 only" in out


def test_express_with_yarn_on_the_node_engines_asks_for(platform: Platform) -> None:
    out = deploy(platform, "express-yarn", "express-yarn")
    assert "Downloading node 20." in out  # engines.node 20.x; the stack has 18
    assert "Installing dependencies with yarn 1.22.22 (yarn.lock found)" in out
    assert "Running build" in out and "Pruning devDependencies" in out
    body = page(platform, "express-yarn", "<h1>Express with yarn</h1>")
    assert "node v20." in body and "built with node v20." in body
    assert "devDependencies present: false" in body
    again = deploy(platform, "express-yarn", "express-yarn")
    assert "Using node 20." in again and "from the build cache" in again


def test_express_with_pnpm_from_its_lockfile(platform: Platform) -> None:
    out = deploy(platform, "express-pnpm", "express-pnpm")
    assert "Installing pnpm 9.15.4 from the npm registry" in out  # packageManager
    assert "Installing dependencies with pnpm (pnpm-lock.yaml found)" in out
    assert "Running build" in out and "Pruning devDependencies" in out
    body = page(platform, "express-pnpm", "<h1>Express with pnpm</h1>")
    assert "built by pnpm pnpm/9.15.4" in body
    assert "devDependencies present: false" in body and "node_modules/.pnpm: true" in body
    again = deploy(platform, "express-pnpm", "express-pnpm")
    assert "Using pnpm 9.15.4 from the build cache" in again


def test_express_with_yarn_berry_and_plug_n_play(platform: Platform) -> None:
    out = deploy(platform, "express-berry", "express-yarn-berry")
    assert "Installing yarn 4.5.3 from the npm registry" in out  # packageManager
    assert "Installing dependencies with yarn 4.5.3 (yarn.lock found)" in out
    assert "Running build" in out and "Pruning devDependencies" in out
    assert "Plug'n'Play install: node loads /app/.pnp.cjs" in out
    body = page(platform, "express-berry", "<h1>Express with Yarn Berry</h1>")
    assert "built by yarn/4.5.3" in body
    assert "node_modules present: false" in body and "Plug'n'Play: true" in body
    assert "devDependencies present: false" in body
    again = deploy(platform, "express-berry", "express-yarn-berry")
    assert "Using yarn 4.5.3 from the build cache" in again
    assert "Build cache unchanged" in again  # packages came from the cached .yarn/cache
