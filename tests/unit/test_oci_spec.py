"""OCI bundle generation and the host stack, without runc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slipway import errors
from slipway.oci import ContainerSpec, HostStack, app_overlay, build_config, write_bundle
from slipway.oci.runc import ContainerState, _translate


@pytest.fixture
def fake_host(tmp_path: Path) -> Path:
    """A tiny usrmerged host: /bin -> usr/bin, a real /lib64, an /etc with secrets."""
    host = tmp_path / "host"
    (host / "usr" / "bin").mkdir(parents=True)
    (host / "usr" / "lib").mkdir()
    (host / "bin").symlink_to("usr/bin")
    (host / "lib").symlink_to("usr/lib")
    (host / "lib64").mkdir()
    etc = host / "etc"
    (etc / "ssl").mkdir(parents=True)
    (etc / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    (etc / "shadow").write_text("root:secret\n")
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/bash\nalice:x:1000:1000::/:/bin/sh\n")
    return host


@pytest.fixture
def stack(tmp_path: Path, fake_host: Path) -> HostStack:
    st = HostStack(tmp_path / "state", host_root=fake_host)
    st.prepare()
    return st


def test_host_stack_mirrors_usrmerge_and_trims_etc(stack: HostStack, fake_host: Path) -> None:
    root = stack.rootfs()
    assert os.readlink(root / "bin") == "usr/bin"
    assert os.readlink(root / "lib") == "usr/lib"
    assert (root / "lib64").is_dir() and not (root / "lib64").is_symlink()
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    etc = stack.etc_dir()
    assert (etc / "resolv.conf").read_text() == "nameserver 192.0.2.1\n"
    assert not (etc / "shadow").exists()
    passwd = (etc / "passwd").read_text()
    assert "dyno:x:64000:64000" in passwd and "alice" not in passwd
    dests = {m.destination: m for m in stack.mounts()}
    assert set(dests) == {"/usr", "/lib64", "/etc", "/etc/ssl"}
    assert all("ro" in m.options for m in dests.values())
    assert dests["/usr"].source == str(fake_host / "usr")
    stack.prepare()  # idempotent


def spec(**kw: object) -> ContainerSpec:
    values: dict[str, object] = {
        "hostname": "web.1",
        "args": ("/bin/bash", "-c", "true"),
        "env": {"PORT": "5000", "PATH": "/custom"},
        "cgroups_path": "/slipway/c1",
        "memory_limit_bytes": 512 * 1024 * 1024,
        "pids_limit": 256,
        "mounts": (app_overlay(Path("/l"), Path("/u"), Path("/w")),),
    }
    values.update(kw)
    return ContainerSpec(**values)  # type: ignore[arg-type]


def test_config_sandbox_fields(stack: HostStack) -> None:
    cfg = build_config(spec(), stack)
    ns = {n["type"] for n in cfg["linux"]["namespaces"]}
    assert ns == {"pid", "mount", "ipc", "uts"}  # no network namespace: dynos share the host's
    proc = cfg["process"]
    assert proc["user"]["uid"] == 64000 and proc["user"]["gid"] == 64000
    assert proc["noNewPrivileges"] is True
    assert all(v == [] for v in proc["capabilities"].values())
    assert "PORT=5000" in proc["env"] and "PATH=/custom" in proc["env"]
    assert cfg["hostname"] == "web.1"
    assert cfg["root"] == {"path": str(stack.rootfs()), "readonly": True}
    res = cfg["linux"]["resources"]
    assert res["memory"] == {"limit": 512 * 1024 * 1024, "swap": 512 * 1024 * 1024}
    assert res["pids"] == {"limit": 256}
    assert cfg["linux"]["cgroupsPath"] == "/slipway/c1"
    mounts = {m["destination"]: m for m in cfg["mounts"]}
    assert mounts["/tmp"]["type"] == "tmpfs"
    assert mounts["/proc"]["type"] == "proc"
    assert mounts["/dev"]["type"] == "tmpfs"
    assert mounts["/app"]["type"] == "overlay"
    assert "upperdir=/u" in mounts["/app"]["options"]
    assert {"type": "RLIMIT_NOFILE", "hard": 10000, "soft": 10000} in proc["rlimits"]
    assert "/proc/kcore" in cfg["linux"]["maskedPaths"]


def test_limits_are_optional(stack: HostStack) -> None:
    res = build_config(spec(memory_limit_bytes=None, pids_limit=None), stack)["linux"]["resources"]
    assert "memory" not in res and "pids" not in res


def test_write_bundle(tmp_path: Path, stack: HostStack) -> None:
    import json

    bundle = write_bundle(tmp_path / "b", build_config(spec(), stack))
    assert json.loads((bundle / "config.json").read_text())["hostname"] == "web.1"


@pytest.mark.parametrize(
    ("stderr", "cls"),
    [
        ('time="x" level=error msg="container does not exist"', errors.NotFound),
        ("container with id exists: c1\ncontainer c1 already exists", errors.AlreadyExists),
        ("something broke", errors.FailedPrecondition),
        ("", errors.FailedPrecondition),
    ],
)
def test_runc_errors_are_translated(stderr: str, cls: type[errors.SlipwayError]) -> None:
    assert type(_translate(stderr, "kill")) is cls


def test_container_state_from_runc_json() -> None:
    st = ContainerState.from_json(
        {"id": "c1", "status": "running", "pid": 42, "bundle": "/b", "annotations": {"a": "1"}}
    )
    assert st.running and st.pid == 42 and st.annotations == {"a": "1"}
    assert not ContainerState.from_json({"id": "c1", "status": "stopped", "pid": 0}).running
