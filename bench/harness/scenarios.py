"""The scenarios and how one candidate is run through one of them."""

import time
from dataclasses import dataclass

from . import configs, load, procs
from .configs import HTTP, HTTPS, TCP


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    mode: str
    path: str = "/small"
    connections: int = 32
    headers: tuple = ()
    unit: str = "req"  # "req": requests/s; "MiB": MiB/s
    idle: bool = False  # hold idle connections and weigh memory instead of load


SCENARIOS = [
    Scenario("keepalive", "small requests, keep-alive", HTTP),
    Scenario("tls", "small requests, TLS terminated, keep-alive", HTTPS),
    Scenario("close", "one request per connection", HTTP, headers=("Connection: close",)),
    Scenario("1mib", "1 MiB responses", HTTP, path="/1m", connections=8, unit="MiB"),
    Scenario("l4", "layer 4 bulk, 64 MiB file", TCP, path="/64m", connections=4, unit="MiB"),
    Scenario("idle", "idle keep-alive client connections", HTTP, idle=True),
]


class Candidate:
    """One balancer: how to write its configuration and start it."""

    def __init__(self, name, command, write, max_clients=lambda lay: None, modes=(HTTP, HTTPS, TCP)):
        self.name, self.command, self.write = name, command, write
        self.max_clients = max_clients
        self.modes = modes

    def start(self, lay, mode, cpu):
        path = lay.dir / f"{self.name}-{mode}.conf"
        path.write_text(self.write(lay, mode))
        log = lay.dir / f"{self.name}.log"
        proc = procs.start(self.command(path, lay), cpu, log)
        try:
            procs.wait_port(lay.front, proc)
        except RuntimeError as e:
            procs.stop(proc)
            raise RuntimeError(f"{self.name} ({mode}): {e}\n{log.read_text()[-2000:]}") from None
        return proc


def sluice(name, binary):
    return Candidate(
        name,
        lambda p, lay: [binary, "run", "--config", str(p)],
        configs.sluice,
        max_clients=lambda lay: lay.haproxy_maxconn(HTTP) - 8,
    )


def candidates(sluice_bin, nginx_user, sluice_pgo_bin=None):
    """Every balancer; the profile-guided sluice build too when one is given."""
    pgo = [sluice("sluice-pgo", sluice_pgo_bin)] if sluice_pgo_bin else []
    return [
        sluice("sluice", sluice_bin),
        *pgo,
        Candidate(
            "haproxy",
            lambda p, lay: ["haproxy", "-db", "-f", str(p)],
            configs.haproxy,
            max_clients=lambda lay: lay.haproxy_maxconn(HTTP) - 8,
        ),
        Candidate(
            "haproxy-copy",
            lambda p, lay: ["haproxy", "-db", "-f", str(p)],
            lambda lay, mode: configs.haproxy(lay, mode, splice=False),
            modes=(TCP,),
        ),
        Candidate(
            "nginx",
            lambda p, lay: procs.nginx_command(p, lay.dir / "front-error.log"),
            lambda lay, mode: configs.nginx(lay, mode, nginx_user),
        ),
    ]


def run_one(scenario, candidate, lay, cpu, seconds, idle_count):
    """Runs one candidate (None: straight at one backend) through one scenario."""
    if candidate is None:
        if scenario.mode == HTTPS or scenario.idle:
            return None  # the backends speak plain HTTP; idle memory needs a balancer
        return _measure_wrk(scenario, None, lay.backends[0], seconds, lay.servers_pid)
    proc = candidate.start(lay, scenario.mode, cpu)
    try:
        if scenario.idle:
            cap = candidate.max_clients(lay)
            return _measure_idle(proc, lay.front, min(idle_count, cap or idle_count))
        return _measure_wrk(scenario, proc, lay.front, seconds, lay.servers_pid)
    finally:
        procs.stop(proc)


def _measure_wrk(scenario, proc, port, seconds, servers_pid):
    scheme = "https" if scenario.mode == HTTPS else "http"
    url = f"{scheme}://127.0.0.1:{port}{scenario.path}"
    load.wrk(url, scenario.connections, 1, scenario.headers)  # warm-up: pools, caches
    cpu_before = procs.cpu_seconds(proc.pid) if proc else 0.0
    servers_before, balancer_before = _switches(proc, servers_pid)
    result = load.wrk(url, scenario.connections, seconds, scenario.headers)
    elapsed = result["duration_us"] / 1e6
    amount = _amount(scenario, result)
    figure = {
        "rate": amount / elapsed,
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "errors": result["errors"],
        "requests": result["requests"],
    }
    # How the balancer's rhythm cuts up the time of the CPU the servers share with wrk:
    # the servers preempted, and the balancer going to sleep (each wake-up of it is paid
    # for on that CPU), per 1,000 requests or per MiB.
    servers_after, balancer_after = _switches(proc, servers_pid)
    per = (1000 if scenario.unit == "req" else 1) / amount if amount else 0.0
    figure["servers_preempted"] = (servers_after.preempted - servers_before.preempted) * per
    if proc:
        cpu = procs.cpu_seconds(proc.pid) - cpu_before
        figure["cpu_s"] = cpu
        figure["per_cpu_s"] = amount / cpu if cpu > 0 else None
        figure["peak_rss_mib"] = procs.memory_kib(proc.pid, "VmHWM") / 1024
        figure["balancer_sleeps"] = (balancer_after.sleeps - balancer_before.sleeps) * per
    return figure


def _switches(proc, servers_pid):
    """Context switches of the servers, then of the balancer (none without one)."""
    none = procs.Switches(0, 0)
    servers = procs.context_switches(servers_pid) if servers_pid else none
    balancer = procs.context_switches(proc.pid) if proc else none
    return servers, balancer


def _amount(scenario, result):
    return result["bytes"] / 2**20 if scenario.unit == "MiB" else result["requests"]


def _measure_idle(proc, port, count):
    load.wrk(f"http://127.0.0.1:{port}/small", 8, 1)  # warm-up, as for the load scenarios
    time.sleep(0.5)
    before = procs.memory_kib(proc.pid, "VmRSS")

    def measure():
        return {"rss_held_kib": procs.memory_kib(proc.pid, "VmRSS")}

    held = load.hold_idle(port, count, measure)
    grown = held["rss_held_kib"] - before
    return {
        "connections": held["answered"],
        "errors": held["errors"] + (held["answered"] - held["open_at_end"]),
        "rss_before_mib": before / 1024,
        "rss_held_mib": held["rss_held_kib"] / 1024,
        "per_connection_kib": grown / held["answered"] if held["answered"] else None,
        "peak_rss_mib": procs.memory_kib(proc.pid, "VmHWM") / 1024,
    }
