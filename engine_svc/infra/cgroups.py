"""Per-sandbox control groups: a process limit, a memory limit, out-of-memory detection, and a way
to kill every process of a sandbox.

bubblewrap alone cannot hold a fork bomb (RLIMIT_NPROC counts the host uid, not the sandbox) nor
tell an out-of-memory kill from any other SIGKILL. The engine puts each sandbox in a cgroup of its
own under the engine's cgroup: pids.max and the memory limit hold for everything inside, and the
memory controller's oom_kill counter says whether the kernel killed something for memory.

Works with cgroup v2 (unified) and v1 (pids and memory controllers); where neither is writable (an
unprivileged engine without delegation), `detect()` answers None and the engine falls back to
rlimits alone, saying so in its log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class SandboxGroup:
    """The cgroup folders of one sandbox (one per controller in v1, one in v2)."""

    folders: tuple[Path, ...]
    procs_files: tuple[Path, ...]
    memory_events: Path  # v2: memory.events; v1: memory.oom_control (both count oom_kill)

    def oom_kills(self) -> int:
        try:
            for line in self.memory_events.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def pids(self) -> list[int]:
        found: set[int] = set()
        for procs in self.procs_files:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in procs.read_text().split())
        return sorted(found)

    def kill_all(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, wait_seconds: float = 2.0) -> None:
        """Removes the folders once their processes are gone (a killed PID namespace takes a moment
        to empty). Best effort, bounded."""
        deadline = time.monotonic() + wait_seconds
        for folder in self.folders:
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    self.kill_all()
                    time.sleep(0.01)


class CgroupManager:
    def __init__(self, parents: dict[str, Path], version: int):
        self.parents = parents  # controller ("pids", "memory", or "" for v2) -> our cgroup folder
        self.version = version

    @classmethod
    def detect(cls) -> CgroupManager | None:
        """Our own cgroup(s), with a c2d folder created under them, or None where we cannot write."""
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
        own: dict[str, str] = {}
        for line in lines:
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(","):
                own[controller] = path
        parents: dict[str, Path] = {}
        if (CGROUP_ROOT / "cgroup.controllers").exists() and "" in own:
            version = 2
            parent = CGROUP_ROOT / own[""].lstrip("/") / "c2d"
            parents[""] = parent
        elif (CGROUP_ROOT / "pids").is_dir() and (CGROUP_ROOT / "memory").is_dir():
            version = 1
            for controller in ("pids", "memory"):
                parents[controller] = CGROUP_ROOT / controller / own.get(controller, "/").lstrip("/") / "c2d"
        else:
            return None
        try:
            for parent in parents.values():
                parent.mkdir(exist_ok=True)
                _remove_dead_engines(parent)
            # One folder per engine process, so that engines sharing a machine never touch each
            # other's groups, and a dead engine's are found by its pid.
            parents = {key: parent / f"engine-{os.getpid()}" for key, parent in parents.items()}
            for parent in parents.values():
                parent.mkdir(exist_ok=True)
            if version == 2:
                # Controllers must be enabled for the children of c2d/ and of our folder in it.
                (parents[""].parent / "cgroup.subtree_control").write_text("+pids +memory")
                (parents[""] / "cgroup.subtree_control").write_text("+pids +memory")
            probe = cls(parents, version).create("probe", max_processes=8, memory_bytes=64 * 1024 * 1024)
            probe.remove()
        except OSError:
            return None
        return cls(parents, version)

    def close(self) -> None:
        """Removes this engine's folder (its groups are gone by now)."""
        for parent in self.parents.values():
            with contextlib.suppress(OSError):
                parent.rmdir()

    def create(self, name: str, *, max_processes: int, memory_bytes: int) -> SandboxGroup:
        if self.version == 2:
            folder = self.parents[""] / name
            folder.mkdir(exist_ok=True)
            (folder / "pids.max").write_text(str(max_processes))
            (folder / "memory.max").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):  # no swap accounting on some kernels
                (folder / "memory.swap.max").write_text("0")
            return SandboxGroup((folder,), (folder / "cgroup.procs",), folder / "memory.events")
        pids = self.parents["pids"] / name
        memory = self.parents["memory"] / name
        pids.mkdir(exist_ok=True)
        memory.mkdir(exist_ok=True)
        (pids / "pids.max").write_text(str(max_processes))
        (memory / "memory.limit_in_bytes").write_text(str(memory_bytes))
        with contextlib.suppress(OSError):  # memsw exists only with swap accounting
            (memory / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
        return SandboxGroup(
            (pids, memory), (pids / "cgroup.procs", memory / "cgroup.procs"), memory / "memory.oom_control"
        )


def _remove_dead_engines(parent: Path) -> None:
    """Groups left by engines that died (their sandboxes died with them)."""
    for folder in parent.glob("engine-*"):
        pid = folder.name.removeprefix("engine-")
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            continue
        for group in folder.iterdir():
            if group.is_dir():
                with contextlib.suppress(OSError):
                    group.rmdir()
        with contextlib.suppress(OSError):
            folder.rmdir()


def join_command(group: SandboxGroup, command: list[str]) -> list[str]:
    """The command, started by a shell that first moves itself into the group: everything it execs
    and forks is then held by the group from its first instruction. If joining fails, nothing runs."""
    script = 'set -e; for procs in "$@"; do [ "$procs" = -- ] && break; echo $$ > "$procs"; done; '
    script += 'while [ "$1" != -- ]; do shift; done; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "c2d-join", *map(str, group.procs_files), "--", *command]
