"""A dyno's size sets its CPU weight: size -> placement -> DynoAssignment ->
DynoSpec -> config.json ``linux.resources.cpu.shares``."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest

from agent.convert import spec_from_pb, spec_to_pb
from agent.model import DynoSpec
from agent.sandbox import DynoPaths, write_dyno_bundle
from controller.api.nodes import NodeAPI
from controller.core.models import ReleaseRecord, SlugInfo
from controller.core.scheduler import AppWant, Cluster, NodeInfo, Placement, ProcessWant, plan
from controller.core.sizes import SizeTable
from slipway.oci import HostStack
from slipway.v1 import node_pb2 as npb

RELEASE = ReleaseRecord(
    app="demo",
    version=2,
    description="",
    created_at=0.0,
    config={"GREETING": "hi"},
    slug=SlugInfo(digest="d" * 64, size_bytes=10),
    process_types={"web": "python3 s.py"},
)


class OneRelease:
    """Stands in for the controller's ReleaseCache: this test has no etcd."""

    async def get(self, app: str, version: int) -> ReleaseRecord | None:
        return RELEASE if (app, version) == (RELEASE.app, RELEASE.version) else None


@pytest.fixture
def stack(tmp_path: Path) -> HostStack:
    host = tmp_path / "host"
    (host / "usr" / "bin").mkdir(parents=True)
    (host / "etc").mkdir()
    (host / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/bash\n")
    st = HostStack(tmp_path / "state", host_root=host)
    st.prepare()
    return st


def place(size_name: str, sizes: SizeTable) -> Placement:
    """The scheduler's placement for one web dyno of ``size_name``, through etcd's encoding."""
    size = sizes.get(size_name)
    want = ProcessWant("web", 1, size.name, size.memory_mb, size.max_processes, size.cpu_shares)
    app = AppWant("demo", 2, "d" * 64, dict(RELEASE.process_types), (want,))
    ids = itertools.count(1)
    result = plan(
        [app], Cluster({"a": NodeInfo("a", "10.0.0.1", 65536)}, ()), 1.0, lambda: f"i{next(ids)}"
    )
    (placement,) = result.add
    return Placement.decode(placement.encode())


def assignment(p: Placement) -> npb.DynoAssignment:
    api = NodeAPI(None, None, None, None)  # type: ignore[arg-type]
    api.releases = OneRelease()  # type: ignore[assignment]
    a = asyncio.run(api.assignment(p))
    assert a is not None
    # Over the wire, as the agent receives it.
    return npb.DynoAssignment.FromString(a.SerializeToString())


def bundle_resources(spec: DynoSpec, stack: HostStack, root: Path) -> dict[str, object]:
    paths = DynoPaths(root)
    write_dyno_bundle(
        spec=spec,
        stack=stack,
        paths=paths,
        slug_dir=root / "slug",
        cid="t.demo.web-1.abc",
        prefix="t",
        port=20000,
        use_overlay=True,
        hard_factor=2.0,
    )
    config = json.loads((paths.bundle / "config.json").read_text())
    return dict(config["linux"]["resources"])


@pytest.mark.parametrize(
    ("size", "shares"),
    [
        ("standard-1x", 1024),
        ("standard-2x", 2048),
        ("performance-m", 4096),
        ("performance-l", 8192),
    ],
)
def test_size_reaches_the_oci_config(
    size: str, shares: int, stack: HostStack, tmp_path: Path
) -> None:
    placement = place(size, SizeTable())
    assert placement.cpu_shares == shares
    a = assignment(placement)
    assert a.cpu_shares == shares and a.memory_mb == placement.memory_mb
    spec = spec_from_pb(a)
    assert spec.cpu_shares == shares
    assert spec_to_pb(spec).cpu_shares == shares  # what the agent reports when registering
    resources = bundle_resources(spec, stack, tmp_path / "dyno")
    assert resources["cpu"] == {"shares": shares}


def test_operator_size_sets_its_own_shares(stack: HostStack, tmp_path: Path) -> None:
    sizes = SizeTable({"tiny": {"memory_mb": 128, "cpu_shares": 256}})
    spec = spec_from_pb(assignment(place("tiny", sizes)))
    assert bundle_resources(spec, stack, tmp_path / "dyno")["cpu"] == {"shares": 256}


def test_records_from_before_cpu_shares_get_the_runtime_default(
    stack: HostStack, tmp_path: Path
) -> None:
    # A placement written by an older controller has no cpu_shares: 0 goes down the wire.
    old = json.loads(place("standard-2x", SizeTable()).encode())
    del old["cpu_shares"]
    placement = Placement.decode(json.dumps(old).encode())
    assert placement.cpu_shares == 0
    assert assignment(placement).cpu_shares == 0
    # An adopted dyno's record from an older agent: no cpu section at all (runc's default).
    record = spec_from_pb(assignment(placement)).to_json()
    del record["cpu_shares"]
    spec = DynoSpec.from_json(record)
    assert spec.cpu_shares == 0
    resources = bundle_resources(spec, stack, tmp_path / "dyno")
    assert "cpu" not in resources
    assert "memory" in resources and "pids" in resources
