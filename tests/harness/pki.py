"""A cluster CA for a test session, and the bundles each component presents."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from slipway import pki


@dataclass
class ClusterPKI:
    """``root/ca`` holds the CA; ``root/ROLE[.NAME]`` each component's bundle."""

    root: Path
    ca: pki.CA = field(init=False)
    _issued: dict[str, pki.Bundle] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.ca = (
            pki.load_ca(self.ca_dir)
            if (self.ca_dir / "ca.key").exists()
            else pki.init_ca(self.ca_dir)
        )

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def ca_file(self) -> Path:
        return self.ca_dir / "ca.crt"

    def bundle(self, role: pki.Role, name: str = "", hosts: tuple[str, ...] = ()) -> pki.Bundle:
        """The bundle of ``role`` (and node ``name``), issued on first use."""
        label = f"{role.value}.{name}" if name else role.value
        if hosts:
            label += "@" + ",".join(hosts)
        if label not in self._issued:
            self._issued[label] = pki.issue(
                self.ca, self.root / label, role, name=name, hosts=hosts
            )
        return self._issued[label]

    def foreign(self) -> pki.Bundle:
        """A bundle from another CA: every engine and API must refuse it."""
        other = self.root / "foreign-ca"
        ca = pki.load_ca(other) if (other / "ca.key").exists() else pki.init_ca(other)
        return pki.issue(ca, self.root / "foreign", pki.Role.CONTROLLER)
