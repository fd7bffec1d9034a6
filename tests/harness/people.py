"""People at their own terminals for the access tests: each with an account an
admin made, their own saved login (SLIPWAY_CONFIG) and the real CLI."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.harness.controller import BIN, ControllerProcess

PASSWORD = {
    "ada@example.com": "ada-secret-1",
    "bob@example.com": "bob-secret-1",
    "cy@example.com": "cy-secret-1",
}


@dataclass
class Person:
    """Someone at their own terminal: their own saved login (SLIPWAY_CONFIG)."""

    email: str
    controller: ControllerProcess
    config: Path
    password: str = ""

    def __post_init__(self) -> None:
        self.password = self.password or PASSWORD[self.email]

    def env(self) -> dict[str, str]:
        env = self.controller.env()
        env.pop("SLIPWAY_CREDENTIALS")
        env["SLIPWAY_CONFIG"] = str(self.config)
        return env

    def slipway(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "slipway"), *args],
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def ok(self, *args: str, stdin: str = "") -> str:
        done = self.slipway(*args, stdin=stdin)
        assert done.returncode == 0, f"slipway {' '.join(args)}: {done.stderr}"
        return done.stdout

    def refused(self, *args: str) -> str:
        done = self.slipway(*args)
        assert done.returncode != 0, f"slipway {' '.join(args)} worked for {self.email}"
        return done.stderr

    def login(self) -> str:
        return self.ok(
            "login",
            "--api",
            self.controller.address,
            "--email",
            self.email,
            "--password-stdin",
            stdin=self.password + "\n",
        )

    @property
    def token(self) -> str:
        return str(json.loads(self.config.read_text())["token"])


def admin_creates(controller: ControllerProcess, email: str) -> None:
    """The operator (the harness's admin token) adds a person, password on stdin."""
    env = controller.env()
    env.update(SLIPWAY_API=controller.address, SLIPWAY_TOKEN=controller.token)
    done = subprocess.run(
        [str(BIN / "slipway"), "users:create", email, "--password-stdin"],
        env=env,
        input=PASSWORD[email] + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"Created user {email}" in done.stdout
