"""Stack images: recipes name their images by digest, a half-built image is not
one, and an image stack shows nothing of the host but its resolver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slipway import errors, stackimage
from slipway.oci import ImageStack
from slipway.stackimage import ImageStore, Recipe


def test_a_recipe_change_names_a_new_image() -> None:
    run = stackimage.recipe("slipway-24", "run")
    same = Recipe(run.stack, run.flavour, run.suite, tuple(reversed(run.packages)), run.extra)
    assert same.image_name == run.image_name  # package order does not matter
    more = Recipe(run.stack, run.flavour, run.suite, (*run.packages, "libgmp10"), run.extra)
    assert more.image_name != run.image_name
    assert run.image_name.startswith("slipway-24-run-")


def test_the_build_image_has_everything_the_run_image_has() -> None:
    run = stackimage.recipe("slipway-24", "run")
    build = stackimage.recipe("slipway-24", "build")
    assert set(run.packages) <= set(build.packages) and set(run.extra) < set(build.extra)
    assert {"build-essential", "git", "openjdk-17-jdk-headless", "golang-go"} <= set(build.extra)


def test_an_unknown_stack_names_the_known_ones() -> None:
    with pytest.raises(errors.InvalidArgument, match="this Slipway has slipway-24"):
        stackimage.recipe("cedar-14", "run")


def _fake_image(store: ImageStore, wanted: Recipe, *, finished: bool) -> Path:
    rootfs = store.rootfs(wanted)
    for name in ("app", "tmp", "proc", "dev", "etc"):
        (rootfs / name).mkdir(parents=True)
    (rootfs / "etc" / "resolv.conf").write_text("")
    if finished:
        info = {
            "name": wanted.image_name,
            "stack": wanted.stack,
            "flavour": wanted.flavour,
            "digest": wanted.digest(),
            "built_at": 0.0,
            "build_seconds": 61.0,
            "size_bytes": 1,
            "packages": 1,
        }
        (store.image_dir(wanted) / "image.json").write_text(json.dumps(info))
    return rootfs


def test_an_image_without_its_marker_is_not_built(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    wanted = stackimage.recipe("slipway-24", "run")
    _fake_image(store, wanted, finished=False)
    assert store.info(wanted) is None
    with pytest.raises(errors.Unavailable, match="slipway-stack build --stack slipway-24"):
        store.require(wanted)


def test_a_finished_image_is_used_as_is(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    wanted = stackimage.recipe("slipway-24", "run")
    rootfs = _fake_image(store, wanted, finished=True)
    assert store.require(wanted) == rootfs
    assert store.ensure(wanted).build_seconds == 61.0  # no second build
    assert [i.name for i in store.images()] == [wanted.image_name]


def test_an_image_stack_binds_only_a_resolver_file_and_the_operators_cas(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    wanted = stackimage.recipe("slipway-24", "run")
    rootfs = _fake_image(store, wanted, finished=True)
    (rootfs / "etc/ssl/certs").mkdir(parents=True)
    (rootfs / "etc/ssl/certs/ca-certificates.crt").write_text("DEBIAN ROOTS\n")
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    stack = ImageStack(
        "slipway-24",
        rootfs,
        tmp_path / "state",
        resolv_conf=b"nameserver 10.0.0.2\n",
        host_root=host,
    )
    stack.prepare()
    assert stack.rootfs() == rootfs
    [mount] = stack.mounts()
    assert mount.destination == "/etc/resolv.conf" and "ro" in mount.options
    assert Path(mount.source).read_bytes() == b"nameserver 10.0.0.2\n"

    # An operator's own CA (say, of an egress proxy) joins the image's bundle.
    local = host / "usr/local/share/ca-certificates"
    local.mkdir(parents=True)
    (local / "proxy.crt").write_text("PROXY CA\n")
    stack.prepare()
    _, bundle, copies = stack.mounts()
    assert bundle.destination == "/etc/ssl/certs/ca-certificates.crt"
    assert Path(bundle.source).read_text() == "DEBIAN ROOTS\n\nPROXY CA\n"
    assert copies.destination == "/usr/local/share/ca-certificates"
    assert [p.name for p in Path(copies.source).iterdir()] == ["proxy.crt"]
    (local / "proxy.crt").unlink()
    stack.prepare()
    assert len(stack.mounts()) == 1 and not list(Path(copies.source).iterdir())


def test_a_missing_image_stops_the_daemon_with_the_command_that_builds_it(
    tmp_path: Path,
) -> None:
    with pytest.raises(errors.Unavailable, match="is not built on this host"):
        stackimage.open_stack("slipway-24", "build", tmp_path, store=ImageStore(tmp_path))
    host = stackimage.open_stack("host", "build", tmp_path, store=ImageStore(tmp_path))
    assert host.name == "host"


def test_prune_removes_images_no_recipe_names_and_failed_builds(tmp_path: Path) -> None:
    from click.testing import CliRunner

    store = ImageStore(tmp_path)
    current = stackimage.recipe("slipway-24", "run")
    _fake_image(store, current, finished=True)
    (tmp_path / "slipway-24-run-0123456789abcdef" / "rootfs").mkdir(parents=True)
    (tmp_path / ".slipway-24-build-fedcba9876543210.building").mkdir()
    result = CliRunner().invoke(stackimage.main, ["prune", "--dir", str(tmp_path), "--yes"])
    assert result.exit_code == 0, result.output
    assert "Pruned 2 image(s)." in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [current.image_name]
