"""The OS/architecture an om runs on: atc builds for the host it runs on (`--host_env_os` and
`--host_env_cpu` default to it) and newer atc says so in the name, `<name>_linux_<arch>.om`; such
an om runs only there. The conversion cache keys on it; msame and the NPU task check it."""

from __future__ import annotations

import platform
import re

from cgan.ascend.errors import AscendError

ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}
OM_TARGET_RE = re.compile(r"_(linux)_(x86_64|aarch64)\.om\Z")


def host_target() -> str:
    """`<os>_<arch>` of this host, as atc names it: linux_x86_64, linux_aarch64."""
    machine = platform.machine().lower()
    return f"{platform.system().lower()}_{ARCH_ALIASES.get(machine, machine)}"


def om_target(name: str) -> str | None:
    """The `<os>_<arch>` an om's file name declares, or None when it declares none."""
    m = OM_TARGET_RE.search(name)
    return f"{m.group(1)}_{m.group(2)}" if m else None


def check_om_target(name: str) -> str:
    """`name` if the om it names can run on this host; AscendError naming both targets otherwise."""
    built_for, here = om_target(name), host_target()
    if built_for not in (None, here):
        raise AscendError(f"om {name} was built by atc for {built_for} and cannot run on this {here} host: "
                          "convert it on (or with --host_env_cpu for) this architecture, or send this run's "
                          "NPU tasks to hosts of that architecture (a queue per kind, docs/deployment.md)")
    return name
