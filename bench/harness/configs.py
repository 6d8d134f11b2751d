"""Equivalent configurations for the three balancers and the backend servers.

Every balancer gets the same shape: one listener, round robin over the three backends,
keep-alive towards them with idle connections reused (HTTP), the client's Host passed on
and X-Forwarded-For/-Proto/-Host added (HTTP), one thread or worker, no access log, no
health checks, timeouts long enough never to fire during a run.
"""

from dataclasses import dataclass
from pathlib import Path

# The modes a scenario asks of a balancer.
HTTP, HTTPS, TCP = "http", "https", "tcp"


@dataclass
class Layout:
    """Where a run's files live and which ports it uses."""

    dir: Path
    backends: list  # three backend ports
    front: int  # the balancer's listening port
    admin: int  # sluice's admin port (unused by the others)
    open_files: int  # the balancers' open files limit
    servers_pid: int = 0  # the backend servers' nginx, once started

    def haproxy_maxconn(self, mode: str) -> int:
        # HAProxy will not start unless it can have two descriptors per connection (plus a
        # pipe of two per four connections when splicing, plus a few): where the limit
        # cannot be raised, that caps the connections it holds.
        per_connection = 2.5 if mode == TCP else 2
        return min(40_000, int((self.open_files - 20) / per_connection))

    @property
    def cert(self) -> Path:
        return self.dir / "front.crt"

    @property
    def key(self) -> Path:
        return self.dir / "front.key"

    @property
    def www(self) -> Path:
        return self.dir / "www"


def backend_nginx(lay: Layout, user: str) -> str:
    """Three static servers in one nginx worker: small, 1 MiB and 64 MiB files.

    `tcp_nopush` stays off (nginx's default): with it on, the servers' corked responses
    gave every balancer a 50-75 ms p99 on 1 MiB responses through reused connections,
    against 8-14 ms direct (docs/performance.md)."""
    servers = "\n".join(
        f"  server {{ listen 127.0.0.1:{p} backlog=4096; root {lay.www}; }}" for p in lay.backends
    )
    return f"""{user}
worker_processes 1;
worker_rlimit_nofile 65536;
pid {lay.dir}/backend.pid;
error_log {lay.dir}/backend-error.log warn;
events {{ worker_connections 30000; }}
http {{
  {_nginx_temp_paths(lay.dir)}
  access_log off;
  sendfile on;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  default_type application/octet-stream;
{servers}
}}
"""


def sluice(lay: Layout, mode: str) -> str:
    servers = ",\n".join(
        f'  {{ name = "b{i}", address = "127.0.0.1:{p}" }}' for i, p in enumerate(lay.backends)
    )
    if mode == TCP:
        service = 'mode = "tcp"\n'
        timeouts = '[service.timeouts]\nidle = "600s"\n'
    else:
        service = ""
        timeouts = '[service.timeouts]\nclient_idle = "600s"\nrequest_header = "60s"\n'
    tls = ""
    if mode == HTTPS:
        tls = f'[service.tls]\ncertificates = [{{ cert = "{lay.cert}", key = "{lay.key}" }}]\n'
    return f"""[global]
access_log = false
workers = 1
shutdown_timeout = "1s"
max_connections = {lay.haproxy_maxconn(mode)}
# Header names in lower case, as HAProxy sends them (sluice's default keeps their case).
preserve_header_case = false

[admin]
listen = "127.0.0.1:{lay.admin}"

[[service]]
name = "bench"
listen = ["127.0.0.1:{lay.front}"]
default_pool = "backends"
{service}
{timeouts}
{tls}
[[pool]]
name = "backends"
algorithm = "round-robin"
servers = [
{servers}
]
"""


def haproxy(lay: Layout, mode: str, splice: bool = True) -> str:
    servers = "\n".join(
        f"  server b{i} 127.0.0.1:{p}" for i, p in enumerate(lay.backends)
    )
    bind = f"bind 127.0.0.1:{lay.front}"
    if mode == HTTPS:
        bind += f" ssl crt {lay.dir}/front.pem"
    if mode == TCP:
        # Splice both ways unless asked not to: HAProxy's default copies through user space.
        proto = "mode tcp"
        if splice:
            proto += "\n  option splice-request\n  option splice-response"
    else:
        # The forwarding headers sluice adds by default, so that each does the same work.
        proto = "mode http\n  option http-keep-alive\n  http-reuse safe\n  option forwardfor"
        scheme = "https" if mode == HTTPS else "http"
        bind += (
            f"\n  http-request set-header X-Forwarded-Proto {scheme}"
            "\n  http-request set-header X-Forwarded-Host %[req.hdr(host)]"
        )
    return f"""global
  nbthread 1
  maxconn {lay.haproxy_maxconn(mode)}
  pidfile {lay.dir}/haproxy.pid

defaults
  {proto}
  timeout connect 5s
  timeout client 600s
  timeout server 600s
  timeout http-keep-alive 600s
  timeout http-request 60s

frontend front
  {bind}
  default_backend backends

backend backends
  balance roundrobin
{servers}
"""


def nginx(lay: Layout, mode: str, user: str) -> str:
    servers = "\n".join(f"    server 127.0.0.1:{p};" for p in lay.backends)
    head = f"""{user}
worker_processes 1;
worker_rlimit_nofile 65536;
pid {lay.dir}/front.pid;
error_log {lay.dir}/front-error.log warn;
"""
    events = "events { worker_connections 30000; }\n"
    if mode == TCP:
        return f"""load_module /usr/lib/nginx/modules/ngx_stream_module.so;
{head}{events}
stream {{
  upstream backends {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{lay.front};
    proxy_pass backends;
    proxy_timeout 600s;
  }}
}}
"""
    listen = f"listen 127.0.0.1:{lay.front}"
    tls = ""
    if mode == HTTPS:
        listen += " ssl"
        tls = f"ssl_certificate {lay.cert};\n    ssl_certificate_key {lay.key};"
    return f"""{head}{events}
http {{
  {_nginx_temp_paths(lay.dir)}
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  upstream backends {{
{servers}
    keepalive 64;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
  }}
  server {{
    {listen};
    {tls}
    location / {{
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_buffering on;
    }}
  }}
}}
"""


def _nginx_temp_paths(d: Path) -> str:
    # nginx otherwise writes under /var/lib/nginx, which a run must not touch.
    return " ".join(
        f"{k}_temp_path {d}/tmp-{k};"
        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
