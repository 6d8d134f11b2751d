"""What every run needs: the servers' files and certificate, open files, CPUs, the backends."""

import contextlib
import os
import resource
import subprocess
import tempfile
from pathlib import Path

from . import configs, procs


def prepare(dir_, open_files):
    """The servers' files and the front's certificate, under `dir_`."""
    lay = configs.Layout(
        dir=dir_,
        backends=[procs.free_port() for _ in range(3)],
        front=procs.free_port(),
        admin=procs.free_port(),
        open_files=open_files,
    )
    lay.www.mkdir()
    (lay.www / "small").write_bytes(b"x" * 100)
    (lay.www / "1m").write_bytes(os.urandom(2**20))
    with open(lay.www / "64m", "wb") as f:
        for _ in range(64):
            f.write(os.urandom(2**20))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(lay.key), "-out", str(lay.cert), "-days", "2", "-subj", "/CN=bench.local",
         "-addext", "subjectAltName=DNS:bench.local,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    (lay.dir / "front.pem").write_bytes(lay.cert.read_bytes() + lay.key.read_bytes())
    for d in (lay.dir, lay.www):
        d.chmod(0o755)
    return lay


def raise_open_files_limit():
    """As high as allowed: the balancers inherit it (HAProxy asks for 2 x maxconn)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (200_000, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            continue
    return hard


def cpus():
    """The balancer's own CPU, and the one everything else shares."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return available[0], available[0]
    return available[-1], available[0]


@contextlib.contextmanager
def backends(open_files, cpu):
    """A run's layout, with the three backend servers (one nginx worker) running on `cpu`."""
    nginx_user = "user root;" if os.geteuid() == 0 else ""
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        lay = prepare(Path(tmp), open_files)
        conf = lay.dir / "backend.conf"
        conf.write_text(configs.backend_nginx(lay, nginx_user))
        server = procs.start(procs.nginx_command(conf, lay.dir / "backend-error.log"), cpu, lay.dir / "backend.log")
        try:
            for port in lay.backends:
                procs.wait_port(port, server)
            lay.servers_pid = server.pid
            yield lay
        finally:
            procs.stop(server)
