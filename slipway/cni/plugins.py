"""Running CNI plugins the way the CNI spec (1.0) says a runtime does.

A network is a list of plugin configs (a "conflist"). For each operation the
runtime executes the plugins from ``CNI_PATH`` with the operation in the
environment and one plugin's config on stdin:

    CNI_COMMAND=ADD|CHECK|DEL  CNI_CONTAINERID  CNI_NETNS  CNI_IFNAME  CNI_PATH

- ADD runs the plugins in order; each gets the previous one's result as
  ``prevResult``; the last result is the network's result (the caller stores it).
- CHECK runs them in order with the stored result as ``prevResult``.
- DEL runs them in reverse order with the stored result (if any); DEL must
  succeed on an unknown or half-made attachment, so the caller can always run it.

A plugin that declares a capability (``portMappings``) gets the runtime's value
for it under ``runtimeConfig``. A plugin that fails exits non-zero and prints
``{"code": N, "msg": "...", "details": "..."}``; that becomes ``CniError``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slipway import errors

CNI_VERSION = "1.0.0"
DEFAULT_PLUGIN_DIR = Path("/usr/lib/cni")
# Plugins call iptables, ip6tables and sysctl tools by name.
_TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CniError(errors.FailedPrecondition):
    """A plugin failed (or could not be run); ``code`` is the CNI error code."""

    reason = "cni_failed"

    def __init__(self, message: str, *, code: int = 999) -> None:
        super().__init__(message)
        self.cni_code = code


@dataclass(frozen=True)
class Network:
    """One CNI network: its name and its plugins' configs, in order."""

    name: str
    plugins: tuple[dict[str, Any], ...]
    runtime_config: dict[str, Any] = field(default_factory=dict, hash=False)

    def plugin_conf(self, index: int, prev_result: dict[str, Any] | None) -> dict[str, Any]:
        """What plugin ``index`` reads on stdin (pure)."""
        conf: dict[str, Any] = {"cniVersion": CNI_VERSION, "name": self.name}
        conf.update(self.plugins[index])
        caps = conf.pop("capabilities", None) or {}
        wanted = {k: v for k, v in self.runtime_config.items() if caps.get(k)}
        if wanted:
            conf["runtimeConfig"] = wanted
        if prev_result is not None:
            conf["prevResult"] = prev_result
        return conf


@dataclass(frozen=True)
class Target:
    """Which sandbox an operation is about."""

    container_id: str
    netns: str  # the namespace's path; "" when it is gone (DEL only)
    ifname: str


class Cni:
    def __init__(self, plugin_dir: Path = DEFAULT_PLUGIN_DIR, *, timeout: float = 30.0) -> None:
        self.plugin_dir = plugin_dir
        self.timeout = timeout

    def available(self) -> str | None:
        """Why plugins cannot run here, or None when they can."""
        for name in ("bridge", "host-local", "portmap", "firewall", "loopback"):
            if not os.access(self.plugin_dir / name, os.X_OK):
                return (
                    f"CNI plugin {name} not found in {self.plugin_dir}; run `make setup` "
                    "(installs containernetworking-plugins)"
                )
        return None

    async def add(self, net: Network, target: Target) -> dict[str, Any]:
        result: dict[str, Any] | None = None
        for i in range(len(net.plugins)):
            result = await self._exec("ADD", net, i, target, result)
        return result or {}

    async def check(
        self,
        net: Network,
        target: Target,
        result: dict[str, Any],
        *,
        known_bug: Callable[[str, CniError], bool] = lambda plugin, exc: False,
    ) -> None:
        """CHECK every plugin; an error ``known_bug(plugin, error)`` accepts is skipped."""
        for i in range(len(net.plugins)):
            try:
                await self._exec("CHECK", net, i, target, result)
            except CniError as exc:
                if not known_bug(str(net.plugins[i]["type"]), exc):
                    raise

    async def delete(self, net: Network, target: Target, result: dict[str, Any] | None) -> None:
        """Every plugin's DEL, last first; all run even when one fails (the first error is
        raised at the end)."""
        first: CniError | None = None
        for i in reversed(range(len(net.plugins))):
            try:
                await self._exec("DEL", net, i, target, result)
            except CniError as exc:
                first = first or exc
        if first is not None:
            raise first

    async def _exec(
        self,
        command: str,
        net: Network,
        index: int,
        target: Target,
        prev: dict[str, Any] | None,
    ) -> dict[str, Any]:
        conf = net.plugin_conf(index, prev)
        plugin = str(conf["type"])
        binary = self.plugin_dir / plugin
        env = {
            "PATH": _TOOL_PATH,
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": target.container_id,
            "CNI_NETNS": target.netns,
            "CNI_IFNAME": target.ifname,
            "CNI_PATH": str(self.plugin_dir),
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                str(binary),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            raise CniError(f"cannot run CNI plugin {binary}: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(json.dumps(conf).encode()), self.timeout
            )
        except TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise CniError(f"CNI {command} of plugin {plugin} timed out") from exc
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            raise
        if proc.returncode != 0:
            raise _error(command, plugin, out, err)
        if command != "ADD" or not out.strip():
            return prev or {}
        try:
            parsed: dict[str, Any] = json.loads(out)
        except ValueError as exc:
            raise CniError(f"CNI plugin {plugin} printed no JSON result") from exc
        return parsed


def _error(command: str, plugin: str, out: bytes, err: bytes) -> CniError:
    try:
        data = json.loads(out)
        msg = str(data.get("msg", "")) + (f": {data['details']}" if data.get("details") else "")
        code = int(data.get("code", 999))
    except (ValueError, AttributeError):
        msg, code = (err or out).decode(errors="replace").strip(), 999
    return CniError(f"CNI {command} of plugin {plugin} failed: {msg}", code=code)


def result_address(result: dict[str, Any]) -> str:
    """The sandbox's IPv4 address in an ADD result ("" when none)."""
    for ip in result.get("ips") or []:
        address = str(ip.get("address", ""))
        if "." in address:
            return address.split("/")[0]
    return ""


def host_interfaces(result: dict[str, Any]) -> list[str]:
    """Interfaces of the result that live on the host side (no ``sandbox``)."""
    return [str(i["name"]) for i in result.get("interfaces") or [] if not i.get("sandbox")]
