"""One multi-host cluster per module; skipped only where namespaces cannot exist."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.multihost.harness import MultiHostCluster
from tests.multihost.net import unavailable_reason


@pytest.fixture(scope="module")
def mh_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiHostCluster]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"multi-host tests need network namespaces: {reason}")
    cluster = MultiHostCluster(tmp_path_factory.mktemp("multihost"))
    # Every process logs to WORKDIR/NAME.log; pytest keeps the last runs' dirs.
    print(f"[multihost] logs in {cluster.workdir}")
    try:
        cluster.start()
        yield cluster
    finally:
        # Also runs when start() failed half-way: nothing outlives the module.
        cluster.close()
