"""Processes under test: start pinned, wait for their port, read CPU time, context switches
and memory."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list, cpu: int, log: Path) -> subprocess.Popen:
    """Starts `cmd` pinned to one CPU, its output into `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            ["taskset", "-c", str(cpu), *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def nginx_command(conf: Path, error_log: Path) -> list:
    """nginx in the foreground, its early errors not in /var/log."""
    return ["nginx", "-g", "daemon off;", "-e", str(error_log), "-c", str(conf)]


def wait_port(port: int, proc: subprocess.Popen, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {seconds}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass


def tree(pid: int) -> list:
    """`pid` and its descendants (nginx's workers, taskset's child)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process tree, all threads included."""
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


class Switches(NamedTuple):
    sleeps: int  # voluntary context switches: the thread waited
    preempted: int  # involuntary ones: the scheduler took the CPU away


def context_switches(pid: int) -> Switches:
    """Context switches of the process tree, all threads included."""
    sleeps = preempted = 0
    for p in tree(pid):
        for status in Path(f"/proc/{p}/task").glob("*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            sleeps += _status_field(text, "voluntary_ctxt_switches")
            preempted += _status_field(text, "nonvoluntary_ctxt_switches")
    return Switches(sleeps, preempted)


def memory_kib(pid: int, field: str) -> int:
    """Sum of `VmRSS` (now) or `VmHWM` (peak) over the process tree, in KiB."""
    total = 0
    for p in tree(pid):
        try:
            total += _status_field(Path(f"/proc/{p}/status").read_text(), field)
        except OSError:
            continue
    return total


def _status_field(status: str, field: str) -> int:
    """The number after `field:` in a `/proc/.../status` text; 0 where it is absent."""
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0
