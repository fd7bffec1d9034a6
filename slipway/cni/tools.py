"""The host tools sandbox networking drives (nft, ip, bridge), run without a shell."""

from __future__ import annotations

import asyncio
import subprocess

from slipway import engines, errors


async def run(*argv: str, stdin: str = "", timeout: float = 20.0) -> str:
    """Run ``argv`` (its first word looked up like any engine); stdout, or an error
    carrying the tool's stderr."""
    try:
        proc = await asyncio.create_subprocess_exec(
            engines.find_binary(argv[0]),
            *argv[1:],
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise errors.FailedPrecondition(f"cannot run {argv[0]}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout)
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise errors.Unavailable(f"{argv[0]} timed out", reason=f"{argv[0]}_timeout") from exc
    if proc.returncode != 0:
        raise errors.FailedPrecondition(
            f"{' '.join(argv)} failed: {err.decode(errors='replace').strip()}",
            reason=f"{argv[0]}_failed",
        )
    return out.decode(errors="replace")


def run_sync(*argv: str, timeout: float = 20.0, check: bool = True) -> str:
    """:func:`run` for blocking set-up code; ``check=False`` returns stdout whatever
    the exit status (an absent device reads as nothing)."""
    try:
        done = subprocess.run(
            [engines.find_binary(argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except OSError as exc:
        raise errors.FailedPrecondition(f"cannot run {argv[0]}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise errors.Unavailable(f"{argv[0]} timed out", reason=f"{argv[0]}_timeout") from exc
    if check and done.returncode != 0:
        raise errors.FailedPrecondition(
            f"{' '.join(argv)} failed: {done.stderr.strip()}", reason=f"{argv[0]}_failed"
        )
    return done.stdout
