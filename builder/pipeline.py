"""One build's buildpack steps, in order, in the sandbox: detect, compile, release.

Work directory layout on the builder host (one per build attempt):

    work/app                    source unpacked, .slugignore applied -> /app
    work/tmp                    -> /tmp in the sandbox
    work/tmp/cache              CACHE_DIR (restored from / saved to the caches bucket)
    work/tmp/env                ENV_DIR, one file per config var
    work/tmp/buildpacks/N-name  writable copies of the buildpacks, in run order
    work/fetch                  buildpacks fetched from URLs (host side only)
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder import buildpacks as bp
from builder.sandbox import OnLine, Sandbox
from slipway import archive

_DETECT_TIMEOUT = 60.0
_RELEASE_TIMEOUT = 60.0
# Sources every earlier buildpack's `export`, then runs the next step (argv after --).
_WITH_EXPORTS = 'while [ "$1" != "--" ]; do [ -f "$1" ] && . "$1"; shift; done; shift; exec "$@"'


@dataclass(frozen=True)
class Workdir:
    root: Path

    @property
    def app(self) -> Path:
        return self.root / "app"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def cache(self) -> Path:
        return self.tmp / "cache"

    @property
    def env(self) -> Path:
        return self.tmp / "env"

    @property
    def buildpacks(self) -> Path:
        return self.tmp / "buildpacks"

    @property
    def fetch(self) -> Path:
        return self.root / "fetch"

    def create(self) -> None:
        for d in (self.app, self.tmp, self.cache, self.buildpacks, self.fetch):
            d.mkdir(parents=True, exist_ok=True)
        # A real /tmp for the build user (sticky, world-writable); ENV_DIR inside it
        # stays root-owned, so the build can read config vars but not change them.
        self.tmp.chmod(0o1777)


@dataclass
class BuildOutcome:
    process_types: bp.ProcessTypes
    buildpacks: list[str] = field(default_factory=list)  # names as given / detected
    detected: list[str] = field(default_factory=list)  # what bin/detect printed


class Pipeline:
    def __init__(self, sandbox: Sandbox, *, compile_timeout: float) -> None:
        self._sandbox = sandbox
        self._compile_timeout = compile_timeout

    def _env(self) -> dict[str, str]:
        return {
            "STACK": self._sandbox.stack_name,
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
        }

    async def _step(
        self, work: Workdir, argv: Sequence[str], out: OnLine, timeout: float
    ) -> tuple[int, bool]:
        result = await self._sandbox.run(
            argv, app_dir=work.app, tmp_dir=work.tmp, env=self._env(), on_line=out, timeout=timeout
        )
        return result.exit_code, result.timed_out

    async def _capture(
        self, work: Workdir, argv: Sequence[str], out: OnLine, timeout: float
    ) -> tuple[int, list[str]]:
        """Run a step whose stdout is data (detect name, release YAML); stderr goes to out."""
        lines: list[str] = []

        async def keep(line: str) -> None:
            lines.append(line)

        result = await self._sandbox.run(
            argv,
            app_dir=work.app,
            tmp_dir=work.tmp,
            env=self._env(),
            on_line=keep,
            on_stderr=out,
            timeout=timeout,
        )
        if result.timed_out:
            raise bp.BuildFailed(f"{argv[0]} did not finish within {timeout:.0f}s")
        return result.exit_code, lines

    def _install(self, work: Workdir, index: int, pack: bp.Buildpack) -> str:
        """Copy a buildpack into the sandbox's /tmp; returns its path inside the sandbox."""
        base = "".join(c if c.isalnum() or c in "-_." else "-" for c in pack.path.name)[:40]
        dest = work.buildpacks / f"{index}-{base or 'buildpack'}"
        shutil.copytree(pack.path, dest, symlinks=True)
        archive.chown_tree(dest, self._sandbox.uid, self._sandbox.gid)
        return f"/tmp/buildpacks/{dest.name}"

    async def run(
        self, work: Workdir, specs: Sequence[str], config: Mapping[str, str], out: OnLine
    ) -> BuildOutcome:
        removed = bp.apply_slugignore(work.app)
        if removed:
            await out(f"-----> Removed {len(removed)} path(s) listed in .slugignore")
        bp.write_env_dir(work.env, config)
        archive.chown_tree(work.app, self._sandbox.uid, self._sandbox.gid)
        archive.chown_tree(work.cache, self._sandbox.uid, self._sandbox.gid)

        if specs:
            candidates = await bp.resolve(specs, work.fetch)
            auto = False
        else:
            candidates = bp.builtins()
            auto = True

        chosen: list[tuple[bp.Buildpack, str, str]] = []  # (buildpack, sandbox path, name)
        tried: list[str] = []
        for i, pack in enumerate(candidates):
            inner = self._install(work, i, pack)
            code, lines = await self._capture(
                work, [f"{inner}/bin/detect", "/app"], out, _DETECT_TIMEOUT
            )
            tried.append(pack.name)
            if code == 0:
                chosen.append((pack, inner, lines[0].strip() if lines else pack.name))
                if auto:
                    break
            elif not auto:
                raise bp.BuildFailed(
                    f"App not compatible with buildpack {pack.name} (bin/detect exited {code})"
                )
        if not chosen:
            raise bp.BuildFailed(
                "No buildpack detected this app. Tried: "
                + ", ".join(tried)
                + ". Add a requirements.txt, package.json or Procfile, or set a buildpack."
            )

        deadline = time.monotonic() + self._compile_timeout
        exports: list[str] = []
        for pack, inner, name in chosen:
            await out(f"-----> {name} app detected ({pack.name} buildpack)")
            remaining = deadline - time.monotonic()
            argv = [
                "/bin/bash",
                "-c",
                _WITH_EXPORTS,
                "with-exports",
                *exports,
                "--",
                f"{inner}/bin/compile",
                "/app",
                "/tmp/cache",
                "/tmp/env",
            ]
            code, timed_out = await self._step(work, argv, out, max(remaining, 1.0))
            if timed_out:
                limit = self._compile_timeout / 60
                raise bp.BuildFailed(f"Compile exceeded the time limit of {limit:g} min")
            if code != 0:
                raise bp.BuildFailed(f"{pack.name} buildpack: bin/compile failed (exit {code})")
            exports.append(f"{inner}/export")

        defaults: list[dict[str, str]] = []
        for pack, inner, _name in chosen:
            if not (pack.path / "bin" / "release").is_file():
                continue
            code, lines = await self._capture(
                work, [f"{inner}/bin/release", "/app"], out, _RELEASE_TIMEOUT
            )
            if code != 0:
                raise bp.BuildFailed(f"{pack.name} buildpack: bin/release failed (exit {code})")
            defaults.append(bp.parse_release_yaml("\n".join(lines), buildpack=pack.name))

        procfile_text = bp.read_small_file(work.app / "Procfile")
        procfile = bp.parse_procfile(procfile_text) if procfile_text is not None else None
        types = bp.merge_process_types(procfile, defaults)
        return BuildOutcome(
            process_types=types,
            buildpacks=[p.name for p, _, _ in chosen],
            detected=[n for _, _, n in chosen],
        )
