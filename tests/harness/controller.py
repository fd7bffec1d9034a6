"""Run a real ``slipway-controller`` process and drive the real ``slipway`` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from slipway import engines, pki
from slipway.client import Client
from tests.harness import secure

BIN = Path(sys.executable).parent


@dataclass
class ControllerProcess:
    etcd_endpoint: str
    prefix: str
    workdir: Path
    nats_url: str = ""
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    token: str = ""
    extra_args: list[str] = field(default_factory=list)
    # --ca-dir: this controller admits joining nodes (it holds the CA key).
    admit_nodes: bool = True

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "controller.log"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            SLIPWAY_ETCD=self.etcd_endpoint,
            SLIPWAY_ETCD_PREFIX=self.prefix,
            SLIPWAY_CONFIG=str(self.workdir / "cli.json"),
            SLIPWAY_LOG_LEVEL="info",
            # Operator commands (tokens, join tokens, backup) act as root; the
            # CLI checks the controller's certificate against the cluster CA.
            SLIPWAY_CREDENTIALS=str(secure.root().path),
            SLIPWAY_CA_FILE=str(secure.ca_file()),
        )
        if self.nats_url:
            env["SLIPWAY_NATS"] = self.nats_url
        env.pop("SLIPWAY_API", None)
        env.pop("SLIPWAY_TOKEN", None)
        env.pop("SLIPWAY_APP", None)
        return env

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or engines.free_port()
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [
                    str(BIN / "slipway-controller"),
                    "serve",
                    "--listen",
                    self.address,
                    "--credentials",
                    str(secure.bundle(pki.Role.CONTROLLER).path),
                    *(["--ca-dir", str(secure.session().ca_dir)] if self.admit_nodes else []),
                    *self.extra_args,
                ],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        engines.wait_for_port("127.0.0.1", self.port, 20, self.proc)
        if not self.token:
            self.token = self.create_token("test")

    def create_token(self, name: str) -> str:
        out = subprocess.run(
            [str(BIN / "slipway-controller"), "tokens", "create", "--name", name],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return out.stdout.strip()

    def join(self, node: str, out: Path, advertise: str = "127.0.0.1") -> Path:
        """Admit ``node`` as an operator and a new host do: a one-time join token,
        then ``slipway-agent join``; returns the node's credentials directory."""
        token = subprocess.run(
            [str(BIN / "slipway-controller"), "nodes", "join-token", node],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        env = self.env()
        env.pop("SLIPWAY_CREDENTIALS")
        return secure.agent_join(self.address, token, out, advertise, env)

    def client(self, token: str | None = None, timeout: float = 10.0) -> Client:
        """The typed API client, trusting the cluster CA as the CLI does."""
        return Client(
            self.address,
            self.token if token is None else token,
            timeout=timeout,
            ca_file=secure.ca_file(),
        )

    def stop(self) -> None:
        engines.terminate(self.proc, 10)

    def cli(
        self, *args: str, token: str | None = None, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``slipway ARGS`` against this controller, as a user would."""
        env = self.env()
        env["SLIPWAY_API"] = self.address
        env["SLIPWAY_TOKEN"] = self.token if token is None else token
        result = subprocess.run(
            [str(BIN / "slipway"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"slipway {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result
