"""What this process may use of the machine: memory still available, and cores.

Both look at the machine and at the process's control group (cgroup v2, or v1's `memory` and
`cpu` controllers), since a container's limits are set there: memory as the cgroup's limit
less what it uses (page cache that can be dropped, `inactive_file`, not counted as used), cores
as the CPU affinity (`taskset`, cpusets) and the CPU quota (`docker --cpus`, Kubernetes CPU
limits), whichever is smaller. `BEAM_ETL_THREADS` sets the cores beam_etl's own thread pools use.

`root` exists for tests: the files are read under it (`/proc/self/cgroup`, `/sys/fs/cgroup`).
"""

import math
import os
from typing import Final

#: Environment variable: the number of threads beam_etl's own pools use (default: the cores).
THREADS_ENV: Final = "BEAM_ETL_THREADS"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as source:
            return source.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _stat(path: str, key: str) -> int:
    """A value of a cgroup `memory.stat` file (0 when missing)."""
    for line in (_read(path) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.isdigit():
            return int(value)
    return 0


def _cgroups(root: str) -> dict[str, str]:
    """The process's cgroup path by controller (`""` for the v2 unified hierarchy)."""
    found: dict[str, str] = {}
    for line in (_read(os.path.join(root, "proc/self/cgroup")) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                found[controller] = parts[2]
    return found


def _folders(mount: str, path: str) -> list[str]:
    """The cgroup's folder and its ancestors' (a limit anywhere above applies too); inside a
    container's own cgroup namespace the path may not exist under the mount: then the mount's
    root is the cgroup."""
    folders, current = [], path
    while True:
        folder = os.path.join(mount, current.lstrip("/"))
        if os.path.isdir(folder):
            folders.append(folder)
        if current in ("", "/"):
            break
        current = os.path.dirname(current)
    return folders


def _cgroup_room(root: str) -> int | None:
    """Bytes left under the tightest memory limit of the process's cgroups (None: no limit)."""
    groups = _cgroups(root)
    mount = os.path.join(root, "sys/fs/cgroup")
    rooms: list[int] = []
    if "" in groups:  # v2
        for folder in _folders(mount, groups[""]):
            limit = _read(os.path.join(folder, "memory.max"))
            current = _read(os.path.join(folder, "memory.current"))
            if limit and limit.isdigit() and current and current.isdigit():
                used = int(current) - _stat(os.path.join(folder, "memory.stat"), "inactive_file")
                rooms.append(int(limit) - used)
    if "memory" in groups:  # v1
        for folder in _folders(os.path.join(mount, "memory"), groups["memory"]):
            limit = _read(os.path.join(folder, "memory.limit_in_bytes"))
            usage = _read(os.path.join(folder, "memory.usage_in_bytes"))
            if limit and limit.isdigit() and usage and usage.isdigit() and int(limit) < 1 << 60:
                inactive = _stat(os.path.join(folder, "memory.stat"), "total_inactive_file")
                rooms.append(int(limit) - (int(usage) - inactive))
    return min(rooms) if rooms else None


def available_memory(root: str = "/") -> int | None:
    """Bytes of memory this process may still take: the machine's available memory, or less
    when a cgroup limit is closer; None when neither can be read."""
    found: list[int] = []
    for line in (_read(os.path.join(root, "proc/meminfo")) or "").splitlines():
        if line.startswith("MemAvailable:"):
            found.append(int(line.split()[1]) * 1024)
            break
    room = _cgroup_room(root)
    if room is not None:
        found.append(room)
    return max(min(found), 0) if found else None


def _quota_cores(root: str) -> int | None:
    """The cores the tightest CPU quota of the process's cgroups allows (None: no quota)."""
    groups = _cgroups(root)
    mount = os.path.join(root, "sys/fs/cgroup")
    quotas: list[float] = []
    if "" in groups:  # v2: cpu.max is "<quota> <period>" or "max <period>"
        for folder in _folders(mount, groups[""]):
            quota, _, period = (_read(os.path.join(folder, "cpu.max")) or "").partition(" ")
            if quota.isdigit() and period.isdigit() and int(period):
                quotas.append(int(quota) / int(period))
    if "cpu" in groups:  # v1: cpu.cfs_quota_us is -1 without a quota
        for folder in _folders(os.path.join(mount, "cpu"), groups["cpu"]):
            quota = _read(os.path.join(folder, "cpu.cfs_quota_us")) or ""
            period = _read(os.path.join(folder, "cpu.cfs_period_us")) or ""
            if quota.isdigit() and period.isdigit() and int(period):
                quotas.append(int(quota) / int(period))
    return max(1, math.ceil(min(quotas))) if quotas else None


def usable_cores(root: str = "/") -> int:
    """The cores this process may run on (at least 1): its CPU affinity, or fewer when a CPU
    quota allows fewer; `BEAM_ETL_THREADS` overrides both."""
    given = os.environ.get(THREADS_ENV, "").strip()
    if given:
        if not given.isdigit() or int(given) < 1:
            raise ValueError(f"`{THREADS_ENV}` must be a positive integer, not `{given}`")
        return int(given)
    try:
        cores = max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # no affinity on this platform
        cores = max(os.cpu_count() or 1, 1)
    quota = _quota_cores(root)
    return min(cores, quota) if quota is not None else cores
