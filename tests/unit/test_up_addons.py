"""Where `slipway up` keeps the built-in PostgreSQL: a path the postgres user can reach."""

from __future__ import annotations

from pathlib import Path

from slipway.up import UpConfig, components, ensure_pki


def test_a_private_data_dir_puts_postgresql_under_var_lib(tmp_path: Path) -> None:
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    cfg = UpConfig(data_dir=private / ".slipway")
    assert cfg.addons_dir.parent == Path("/var/lib/slipway")
    assert cfg.addons_dir.name.startswith("addons-")
    # The same data dir always finds the same cluster again; another gets its own.
    assert UpConfig(data_dir=private / ".slipway").addons_dir == cfg.addons_dir
    assert UpConfig(data_dir=private / "other").addons_dir != cfg.addons_dir


def test_a_searchable_data_dir_keeps_it_inside(tmp_path: Path) -> None:
    # /tmp is searchable by everyone; the path need not exist yet.
    shared = Path("/tmp") / f"slipway-up-test-{tmp_path.name}"
    cfg = UpConfig(data_dir=shared)
    assert cfg.addons_dir == shared / "addons"
    assert cfg.addons_manifests == [
        shared / "addons" / "manifests" / "postgresql.json",
        shared / "addons" / "manifests" / "redis.json",
    ]


def test_an_explicit_addons_dir_wins(tmp_path: Path) -> None:
    cfg = UpConfig(data_dir=tmp_path, addons_dir_option=Path("/srv/pg"))
    assert cfg.addons_dir == Path("/srv/pg")


def test_the_controller_takes_provider_callbacks_on_a_fixed_port(tmp_path: Path) -> None:
    """A provider that answered 202 calls back later, maybe after `slipway up` was
    restarted: the URL it was given must still lead to the controller."""
    cfg = UpConfig(data_dir=tmp_path, callback_port=6123)
    ensure_pki(cfg, lambda _: None)
    controller = next(c for c in components(cfg) if c.name == "controller")
    at = controller.argv.index("--addons-listen")
    assert controller.argv[at + 1] == "127.0.0.1:6123"
    assert UpConfig(data_dir=tmp_path).callback_port == 5481
