"""Slipway: shared code for the CLI, the API client and the daemons."""

import os

__version__ = "0.1.0"

# Every daemon starts programs (runc, git, tar, curl in tests) while gRPC's
# threads run. gRPC's fork handlers then run in the child between fork and
# exec and can abort it ("Check failed: next_worker->state == KICKED"); we
# never use gRPC in a forked child, so they are off unless asked for. Read
# when grpc is first imported, which every process does after this package.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
