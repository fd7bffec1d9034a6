"""Pure parts of the buildpack runner: Procfile, release YAML, merge, .slugignore, resolution."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from builder import buildpacks as bp
from builder import slug
from slipway import buildproto as protocol
from slipway import errors


def test_parse_procfile() -> None:
    text = "# comment\nweb: python server.py --port $PORT\n\nworker:  celery -A x\nbad line\n"
    assert bp.parse_procfile(text) == {
        "web": "python server.py --port $PORT",
        "worker": "celery -A x",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("---\n", {}),
        ("---\ndefault_process_types: {}\n", {}),
        ("---\ndefault_process_types:\n  web: npm start\n", {"web": "npm start"}),
        (
            "addons: []\ndefault_process_types:\n  web: a\n  worker: b\n",
            {"web": "a", "worker": "b"},
        ),
        ("config_vars:\n  X: 1\n", {}),
    ],
)
def test_parse_release_yaml(text: str, expected: dict[str, str]) -> None:
    assert bp.parse_release_yaml(text) == expected


@pytest.mark.parametrize(
    "text", ["default_process_types: [web]\n", "- just a list\n", "default_process_types: {\n"]
)
def test_parse_release_yaml_rejects_bad_output(text: str) -> None:
    with pytest.raises(bp.BuildFailed, match="bin/release"):
        bp.parse_release_yaml(text, buildpack="x")


def test_procfile_wins_and_release_is_kept_apart() -> None:
    merged = bp.merge_process_types(
        {"web": "gunicorn app", "release": "python migrate.py"},
        [{"web": "python app.py", "worker": "first"}, {"worker": "second"}],
    )
    assert merged.types == {"web": "gunicorn app", "worker": "second"}
    assert merged.release_command == "python migrate.py"


def test_no_procfile_uses_defaults() -> None:
    merged = bp.merge_process_types(None, [{"web": "npm start"}])
    assert merged.types == {"web": "npm start"}
    assert merged.release_command is None


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "expected"),
    [
        ("*.psd", "art/logo.psd", False, True),
        ("*.psd", "logo.psd", False, True),
        ("/docs", "docs", True, True),
        ("/docs", "src/docs", True, False),
        ("docs/", "docs", True, True),
        ("docs/", "docs", False, False),
        ("test/fixtures", "test/fixtures", True, True),
        ("test/fixtures", "x/test/fixtures", True, False),
        ("README.md", "README.md", False, True),
        ("README.md", "README.txt", False, False),
    ],
)
def test_slugignore_matches(pattern: str, path: str, is_dir: bool, expected: bool) -> None:
    assert bp.slugignore_matches([pattern], path, is_dir) is expected


def test_apply_slugignore(tmp_path: Path) -> None:
    (tmp_path / ".slugignore").write_text("# big files\n*.psd\n/docs\ntmp/\n")
    for rel in ("docs/a.md", "src/docs/keep.md", "art/x.psd", "tmp/cache", "app.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    removed = bp.apply_slugignore(tmp_path)
    assert removed == ["art/x.psd", "docs", "tmp"]
    assert (tmp_path / "src/docs/keep.md").exists() and (tmp_path / "app.py").exists()


def test_slugignore_symlink_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("secret")
    app = tmp_path / "app"
    app.mkdir()
    (app / ".slugignore").symlink_to(outside)
    assert bp.apply_slugignore(app) == []
    assert bp.read_small_file(app / ".slugignore") is None


def test_write_env_dir(tmp_path: Path) -> None:
    bp.write_env_dir(tmp_path / "env", {"DATABASE_URL": "postgres://x", "EMPTY": ""})
    assert (tmp_path / "env/DATABASE_URL").read_text() == "postgres://x"
    assert (tmp_path / "env/EMPTY").read_text() == ""
    with pytest.raises(errors.InvalidArgument):
        bp.write_env_dir(tmp_path / "env2", {"../x": "1"})


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("python", "builtin"),
        ("nodejs", "builtin"),
        ("/opt/buildpacks/go", "path"),
        ("./bp", "path"),
        ("https://example.com/bp.tgz", "tarball"),
        ("https://example.com/bp.tar.gz#v1", "tarball"),
        ("https://github.com/x/bp.git", "git"),
        ("https://github.com/x/bp#v2", "git"),
    ],
)
def test_classify(spec: str, kind: str) -> None:
    assert bp.classify(spec) == kind


def test_classify_unknown_name_lists_choices() -> None:
    with pytest.raises(errors.InvalidArgument, match="python, nodejs, go, java, procfile"):
        bp.classify("ruby")


def test_builtins_in_detection_order() -> None:
    packs = bp.builtins()
    assert [p.name for p in packs] == ["python", "nodejs", "go", "java", "procfile"]
    for p in packs:
        for script in ("detect", "compile", "release"):
            path = p.path / "bin" / script
            assert path.is_file() and os.access(path, os.X_OK), path


def test_resolve_local_path_and_missing(tmp_path: Path) -> None:
    good = tmp_path / "bp"
    (good / "bin").mkdir(parents=True)
    for s in ("detect", "compile"):
        (good / "bin" / s).write_text("#!/bin/sh\n")
    resolved = asyncio.run(bp.resolve(["python", str(good)], tmp_path / "fetch"))
    assert [r.path for r in resolved] == [bp.BUILTIN_DIR / "python", good]
    with pytest.raises(bp.BuildFailed, match="not a directory"):
        asyncio.run(bp.resolve([str(tmp_path / "nope")], tmp_path / "fetch"))
    (good / "bin" / "compile").unlink()
    with pytest.raises(bp.BuildFailed, match="no bin/compile"):
        asyncio.run(bp.resolve([str(good)], tmp_path / "fetch"))


def test_slug_size_limits() -> None:
    mb = 1024 * 1024
    assert slug.check_size(10 * mb, warn_bytes=300 * mb, max_bytes=500 * mb) is None
    warning = slug.check_size(301 * mb, warn_bytes=300 * mb, max_bytes=500 * mb)
    assert warning is not None and "soft limit of 300.0 MB" in warning
    with pytest.raises(bp.BuildFailed, match=r"exceeds the limit of 500\.0 MB"):
        slug.check_size(501 * mb, warn_bytes=300 * mb, max_bytes=500 * mb)


def test_job_round_trip_and_validation() -> None:
    job = protocol.BuildJob("b-1", "app", "src-1", ["python"], {"A": "1"}, "host")
    assert protocol.BuildJob.decode(job.encode()) == job
    with pytest.raises(errors.InvalidArgument, match="subject token"):
        protocol.BuildJob.decode(b'{"build_id": "a.b", "app": "x", "source": "s"}')
    with pytest.raises(errors.InvalidArgument, match="malformed"):
        protocol.BuildJob.decode(b'{"app": "x"}')
    status = protocol.BuildStatus(
        "b-1", protocol.SUCCEEDED, 2, "n", slug={"digest": "d"}, app="demo"
    )
    assert protocol.BuildStatus.decode(status.encode()) == status
    assert protocol.status_subject("b-1") == "builds.status.b-1"
    assert protocol.output_subject("b-1") == "builds.output.b-1"


async def test_a_builder_waits_for_jetstream_instead_of_dying_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import nats.errors

    from builder import jobs

    tries: list[int] = []

    async def consumer(js: object, settings: object) -> None:
        tries.append(1)
        if len(tries) < 3:
            raise nats.errors.TimeoutError

    async def no_wait(seconds: float) -> None:
        return None

    class Conn:
        def jetstream(self) -> object:
            return object()

    monkeypatch.setattr(jobs, "ensure_consumer", consumer)
    monkeypatch.setattr(jobs.asyncio, "sleep", no_wait)
    queue = jobs.BuildQueue(Conn(), runner=None, name="b")  # type: ignore[arg-type]
    await queue._bind()
    assert len(tries) == 3
