"""Medians over repetitions, the Markdown table and the targets."""

import statistics

# sluice-pgo: sluice built with profile-guided optimisation (bench/pgo), when measured.
# haproxy-copy: HAProxy's layer 4 default, without splice (the l4 scenario only).
SLUICE_BUILDS = ("sluice", "sluice-pgo")
BALANCERS = (*SLUICE_BUILDS, "haproxy", "haproxy-copy", "nginx")


def median(runs, key):
    values = [r[key] for r in runs if r and r.get(key) is not None]
    return statistics.median(values) if values else None


def summarise(results):
    """results[scenario][candidate] = [figure per repetition] -> medians."""
    out = {}
    for scenario, by_candidate in results.items():
        out[scenario] = {}
        for cand, runs in by_candidate.items():
            runs = [r for r in runs if r]
            if not runs:
                continue
            keys = {k for r in runs for k in r}
            out[scenario][cand] = {k: median(runs, k) for k in keys}
            out[scenario][cand]["errors"] = sum(r.get("errors", 0) for r in runs)
    return out


def _fmt(value, digits=0):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def table(scenarios, summary):
    lines = []
    for sc in scenarios:
        rows = summary.get(sc.name)
        if not rows:
            continue
        lines.append(f"\n### {sc.title} (`{sc.name}`)\n")
        if sc.idle:
            lines.append("| balancer | connections | RSS before MiB | RSS held MiB | KiB per connection | errors |")
            lines.append("|---|---:|---:|---:|---:|---:|")
            for cand in BALANCERS:
                f = rows.get(cand)
                if f:
                    lines.append(
                        f"| {cand} | {_fmt(f['connections'])} | {_fmt(f['rss_before_mib'], 1)} | "
                        f"{_fmt(f['rss_held_mib'], 1)} | {_fmt(f['per_connection_kib'], 2)} | {_fmt(f['errors'])} |"
                    )
            continue
        unit = "MiB/s" if sc.unit == "MiB" else "req/s"
        per = "MiB per CPU-s" if sc.unit == "MiB" else "req per CPU-s"
        each = "per MiB" if sc.unit == "MiB" else "per 1k req"
        lines.append(
            f"| balancer | {unit} | p50 ms | p99 ms | CPU-s | {per} | peak RSS MiB | errors | "
            f"servers preempted {each} | balancer sleeps {each} |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for cand in (*BALANCERS, "direct"):
            f = rows.get(cand)
            if f:
                lines.append(
                    f"| {cand} | {_fmt(f['rate'])} | {_fmt(f['p50_ms'], 2)} | {_fmt(f['p99_ms'], 2)} | "
                    f"{_fmt(f.get('cpu_s'), 2)} | {_fmt(f.get('per_cpu_s'))} | "
                    f"{_fmt(f.get('peak_rss_mib'), 1)} | {_fmt(f['errors'])} | "
                    f"{_fmt(f.get('servers_preempted'), 1)} | {_fmt(f.get('balancer_sleeps'), 1)} |"
                )
    return "\n".join(lines)


def _get(summary, scenario, cand, key):
    return (summary.get(scenario, {}).get(cand) or {}).get(key)


def targets(summary, ours="sluice"):
    """Each target as (description, the figure of the sluice build `ours`, met?)."""
    checks = []

    def ratio(scenario, key, bar, what, higher_is_better=True, against="haproxy", called="HAProxy"):
        mine, theirs = _get(summary, scenario, ours, key), _get(summary, scenario, against, key)
        if mine is None or theirs is None or theirs == 0:
            return
        r = mine / theirs
        met = r >= bar if higher_is_better else r <= bar
        sign = ">=" if higher_is_better else "<="
        checks.append((f"{scenario}: {what} sluice/{called} {sign} {bar}", f"{r:.2f}", met))

    ratio("keepalive", "per_cpu_s", 1.0, "requests per CPU-s")
    ratio("keepalive", "p99_ms", 1.0, "p99 latency", higher_is_better=False)
    ratio("tls", "per_cpu_s", 1.0, "requests per CPU-s")
    ratio("close", "per_cpu_s", 1.0, "requests per CPU-s")
    ratio("l4", "per_cpu_s", 1.5, "MiB per CPU-s", called="HAProxy splicing")
    ratio("l4", "per_cpu_s", 1.5, "MiB per CPU-s", against="haproxy-copy", called="HAProxy default (copying)")
    mine, direct = _get(summary, "1mib", ours, "p99_ms"), _get(summary, "1mib", "direct", "p99_ms")
    if mine is not None and direct is not None:
        checks.append(("1mib: p99 <= direct + 10 ms", f"{mine:.1f} vs {direct + 10:.1f} ms", mine <= direct + 10))
    per = _get(summary, "idle", ours, "per_connection_kib")
    if per is not None:
        checks.append(("idle: KiB per connection <= 2", f"{per:.2f}", per <= 2))
    return checks


def targets_table(summary):
    """One row per target, one column per sluice build measured: its figure and whether
    it met the target."""
    builds = [b for b in SLUICE_BUILDS if any(b in rows for rows in summary.values())]
    by_build = {b: {what: (value, met) for what, value, met in targets(summary, b)} for b in builds}
    lines = ["| target | " + " | ".join(builds) + " |", "|---|" + "---:|" * len(builds)]
    for what in by_build[builds[0]] if builds else ():
        cells = []
        for b in builds:
            value, met = by_build[b].get(what, ("—", True))
            cells.append(value if met else f"**{value}** missed")
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
