"""DownloadAddonBackup (pg:backups:download), mixed into controller.api.platform.PlatformAPI.

The controller relays the backup from its provider chunk by chunk, so neither
side holds more than one chunk of it in memory, whatever its size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from controller.api.convert import timestamp
from controller.api.endpoint import streaming
from controller.bus.addon_provider import ProviderClient
from controller.core.access import Identity
from controller.core.addons import AddonRecord, ServiceRecord
from slipway import errors
from slipway.providers.partner import BACKUP_CHUNK
from slipway.v1 import platform_pb2 as pb

Ctx: TypeAlias = grpc.aio.ServicerContext


def _age(backup: dict[str, Any]) -> tuple[float, str]:
    return float(backup.get("created_at", 0.0)), str(backup.get("id", ""))


def chosen_backup(details: dict[str, Any], backup: str, addon: str) -> dict[str, Any]:
    """The backup named ``backup`` among those the provider lists, or the newest."""
    raw = details.get("backups")
    if not isinstance(raw, list):
        raise errors.FailedPrecondition(f"{addon} keeps no backups", reason="no_backups")
    kept: list[dict[str, Any]] = [b for b in raw if isinstance(b, dict)]
    if not kept:
        raise errors.FailedPrecondition(
            f"{addon} has no backups yet; capture one first", reason="no_backups"
        )
    if not backup:
        return max(kept, key=_age)
    for item in kept:
        if item.get("id") == backup:
            return dict(item)
    known = ", ".join(str(b.get("id")) for b in kept)
    raise errors.NotFound(f"{addon} has no backup {backup!r}; it has {known}")


class BackupRPCs:
    addon_provider: ProviderClient

    _provisioned: Callable[[str, str], Awaitable[tuple[AddonRecord, ServiceRecord]]]

    @streaming
    async def DownloadAddonBackup(
        self, request: pb.DownloadAddonBackupRequest, context: Ctx, who: Identity
    ) -> AsyncIterator[pb.DownloadAddonBackupResponse]:
        addon, service = await self._provisioned(request.app, request.addon)
        details = await self.addon_provider.details(service, addon)
        backup = chosen_backup(details, request.backup, addon.name)
        size = int(backup.get("size_bytes", 0))
        yield pb.DownloadAddonBackupResponse(
            backup=pb.AddonBackup(
                id=str(backup["id"]),
                size_bytes=size,
                created_at=timestamp(float(backup.get("created_at", 0.0))),
            )
        )
        offset = 0
        while offset < size:
            chunk = await self.addon_provider.backup_chunk(
                service, addon, str(backup["id"]), offset, min(BACKUP_CHUNK, size - offset)
            )
            if not chunk:
                raise errors.Unavailable(
                    f"backup {backup['id']} ended at {offset} of {size} bytes; try again"
                )
            offset += len(chunk)
            yield pb.DownloadAddonBackupResponse(chunk=chunk)
