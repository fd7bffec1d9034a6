"""The audit trail in etcd: per app and for the platform, append-only, bounded.

Each scope (an app's name, or ``_platform``) has a sequence number; a record
is written under the next one in the same transaction that drops the record
``keep`` places back, so a trail never holds more than ``keep`` records and
never loses a newer one to a race (the transaction is guarded by the
sequence key's revision). An app's trail goes with the app, and its
destruction is recorded in the platform's trail.
"""

from __future__ import annotations

from controller.core.audit import PLATFORM, AuditRecord
from slipway.etcd import Etcd
from slipway.keys import Keys

KEEP_PER_APP = 1000
KEEP_PLATFORM = 5000


class AuditTrail:
    def __init__(
        self,
        etcd: Etcd,
        keys: Keys,
        *,
        keep: int = KEEP_PER_APP,
        keep_platform: int = KEEP_PLATFORM,
    ) -> None:
        self.etcd = etcd
        self.keys = keys
        self.keep = keep
        self.keep_platform = keep_platform

    async def append(self, record: AuditRecord, *, platform: bool = False) -> None:
        """Add ``record`` to its app's trail, or to the platform's (``platform``, or
        a record of no app)."""
        scope = PLATFORM if platform or not record.app else record.app
        keep = self.keep_platform if scope == PLATFORM else self.keep
        seq_key = self.keys.audit_seq(scope)

        def mutate(current: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
            seq = int(current[seq_key] or b"0") + 1
            writes: dict[bytes, bytes | None] = {
                seq_key: str(seq).encode(),
                self.keys.audit_record(scope, seq): record.encode(),
            }
            if seq > keep:
                writes[self.keys.audit_record(scope, seq - keep)] = None
            return writes

        await self.etcd.update([seq_key], mutate)

    async def read(self, app: str = "", limit: int = 100) -> list[AuditRecord]:
        """The newest ``limit`` records of ``app`` (or the platform), oldest first."""
        kvs, _ = await self.etcd.get_prefix(self.keys.audit_records(app or PLATFORM))
        records = [AuditRecord.decode(kv.value) for kv in kvs]  # keys sort by sequence
        return records[-limit:] if limit > 0 else records
