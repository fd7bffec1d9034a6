"""Running an engine as its own system user (``postgres``, ``redis``), not as root.

PostgreSQL refuses to run as root, and no engine that talks to dynos should:
slipway-addons runs as root (it copies the addons bundle's key) and starts
each engine through ``setpriv`` as the user its Debian package made.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from slipway import engines, errors


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    user: str

    @classmethod
    def system_user(cls, name: str, made_by: str) -> RunAs:
        """The system user ``name`` when we are root; ourselves otherwise."""
        if os.geteuid() != 0:
            entry = pwd.getpwuid(os.geteuid())
            return cls(entry.pw_uid, entry.pw_gid, entry.pw_name)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise errors.FailedPrecondition(
                f"there is no {name!r} system user; run `make setup` ({made_by})"
            ) from None
        return cls(entry.pw_uid, entry.pw_gid, entry.pw_name)

    def wrap(self, argv: Sequence[str], *, death_signal: str = "INT") -> list[str]:
        """``argv`` as this user, sent ``death_signal`` when we die (PostgreSQL's
        fast stop is SIGINT, redis saves and exits on SIGTERM)."""
        setpriv = engines.find_binary("setpriv")
        if os.geteuid() != 0:
            return [setpriv, "--pdeathsig", death_signal, "--", *argv]
        return [
            setpriv,
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--init-groups",
            "--pdeathsig",
            death_signal,
            "--",
            *argv,
        ]

    def own(self, path: Path, mode: int) -> None:
        os.chown(path, self.uid, self.gid)
        os.chmod(path, mode)


def check_reachable(path: Path, who: RunAs, engine: str) -> None:
    """Every parent must be searchable by the engine's user, or it cannot start."""
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == who.uid:
            continue
        if not st.st_mode & 0o001 and not (st.st_gid == who.gid and st.st_mode & 0o010):
            raise errors.FailedPrecondition(
                f"{parent} is not searchable by the {who.user} user, so {engine} cannot "
                f"reach {path}; choose a data directory under a world-searchable path "
                "(for example /var/lib/slipway)"
            )


async def spawn_logged(argv: Sequence[str], log_path: Path) -> asyncio.subprocess.Process:
    """An engine's process in its own session, stdout and stderr appended to its log."""
    with open(log_path, "ab") as out:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


async def stop_process(proc: asyncio.subprocess.Process | None, sig: int, grace: float) -> None:
    """``sig`` (the engine's clean stop), then SIGKILL after ``grace`` seconds."""
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        async with asyncio.timeout(grace):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
