"""core.resources on real files laid out as /proc and /sys/fs/cgroup are (cgroup v1 and v2),
and on this machine."""

import os

import pytest

from beam_etl.core.resources import THREADS_ENV, available_memory, usable_cores

GIB = 1 << 30


def _tree(root, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root)


def test_this_machine_has_memory_and_cores():
    room = available_memory()
    assert room is not None and room > 0
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))


def test_v2_limit_less_use_reclaimable_cache_aside(tmp_path):
    root = _tree(
        tmp_path,
        {
            "proc/meminfo": f"MemTotal: 100 kB\nMemAvailable: {64 * GIB // 1024} kB\n",
            "proc/self/cgroup": "0::/pods/job\n",
            "sys/fs/cgroup/pods/job/memory.max": str(2 * GIB),
            "sys/fs/cgroup/pods/job/memory.current": str(GIB + GIB // 2),
            "sys/fs/cgroup/pods/job/memory.stat": f"anon 1\ninactive_file {GIB // 2}\n",
        },
    )
    assert available_memory(root) == GIB  # 2 GiB - (1.5 GiB - 0.5 GiB of cache)


def test_v2_a_parent_limit_applies_and_max_means_none(tmp_path):
    root = _tree(
        tmp_path,
        {
            "proc/meminfo": f"MemAvailable: {64 * GIB // 1024} kB\n",
            "proc/self/cgroup": "0::/pods/job\n",
            "sys/fs/cgroup/pods/job/memory.max": "max",
            "sys/fs/cgroup/pods/job/memory.current": str(GIB),
            "sys/fs/cgroup/pods/memory.max": str(3 * GIB),
            "sys/fs/cgroup/pods/memory.current": str(GIB),
        },
    )
    assert available_memory(root) == 2 * GIB


def test_v1_memory_and_cpu_quota(tmp_path):
    root = _tree(
        tmp_path,
        {
            "proc/meminfo": f"MemAvailable: {64 * GIB // 1024} kB\n",
            "proc/self/cgroup": "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n",
            "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": str(4 * GIB),
            "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": str(2 * GIB),
            "sys/fs/cgroup/memory/docker/abc/memory.stat": f"total_inactive_file {GIB}\n",
            "sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us": "150000",
            "sys/fs/cgroup/cpu/docker/abc/cpu.cfs_period_us": "100000",
        },
    )
    assert available_memory(root) == 3 * GIB
    assert usable_cores(root) == min(2, len(os.sched_getaffinity(0)))


def test_v1_without_a_limit_is_the_machine(tmp_path):
    root = _tree(
        tmp_path,
        {
            "proc/meminfo": f"MemAvailable: {5 * GIB // 1024} kB\n",
            "proc/self/cgroup": "4:memory:/\n3:cpu,cpuacct:/\n",
            "sys/fs/cgroup/memory/memory.limit_in_bytes": str(9223372036854771712),
            "sys/fs/cgroup/memory/memory.usage_in_bytes": str(GIB),
            "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1",
            "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000",
        },
    )
    assert available_memory(root) == 5 * GIB
    assert usable_cores(root) == len(os.sched_getaffinity(0))


def test_v2_cpu_quota_caps_the_cores(tmp_path):
    root = _tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/\n",
            "sys/fs/cgroup/cpu.max": "50000 100000",  # half a core: one thread
        },
    )
    assert usable_cores(root) == 1


def test_threads_can_be_set(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    assert usable_cores() == 3
    monkeypatch.setenv(THREADS_ENV, "zero")
    with pytest.raises(ValueError, match=THREADS_ENV):
        usable_cores()
