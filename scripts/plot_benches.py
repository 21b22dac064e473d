"""Renders the benches' raw results (bench-results/*.json) as PNG plots.

    python3 scripts/plot_benches.py RESULTS_DIR OUT_DIR

Run through scripts/plot-benches.sh, which provides matplotlib. Each bench
that has a results file gets its plots; Waymark is drawn beside the peer the
bench measured in the same run (CoreDNS, nginx, Knot, NSD). Prints the files
it wrote.
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

THOUSANDS = FuncFormatter(lambda v, _: f"{v / 1000:g}k" if v >= 1000 else f"{v:g}")

WAYMARK = "#1f77b4"
PEERS = ["#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def load(results, bench):
    path = os.path.join(results, bench + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def subtitle(record):
    return f"{record.get('date', '')}, {record.get('machine', '')}"


def save(fig, out, name, written):
    path = os.path.join(out, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)


def cdf(ax, samples, label, color):
    xs = sorted(samples)
    if not xs:
        return
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.step(xs, ys, where="post", label=label, color=color)


def restore(record, out, written):
    runs = sorted(record["data"]["runs"], key=lambda r: r["instances"])
    n = [r["instances"] for r in runs]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(n, [r["load_seconds"] for r in runs], "o-", color=WAYMARK, label="Waymark (redb → index)")
    a.set_xlabel("instances in the store")
    a.xaxis.set_major_formatter(THOUSANDS)
    a.set_ylabel("restart: load time (s)")
    a.legend()
    a.grid(alpha=0.3)
    b.plot(n, [r["bytes_per_instance"] for r in runs], "o-", color=WAYMARK, label="Waymark")
    b.set_xlabel("instances in the store")
    b.xaxis.set_major_formatter(THOUSANDS)
    b.set_ylabel("RSS growth per instance (bytes)")
    b.set_ylim(bottom=0)
    b.legend()
    b.grid(alpha=0.3)
    fig.suptitle("Registry restart (cargo bench --bench restore)\n" + subtitle(record), fontsize=9)
    save(fig, out, "restore.png", written)


def controller(record, out, written):
    runs = sorted(record["data"]["runs"], key=lambda r: r["pods"])
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4), squeeze=False)
    for ax, r in zip(axes[0], runs):
        cdf(ax, r.get("waymark_ms", []), "Waymark (registry)", WAYMARK)
        if r.get("coredns_ms"):
            cdf(ax, r["coredns_ms"], "CoreDNS kubernetes plugin", PEERS[0])
        ax.set_xscale("log")
        ax.set_xlabel("readiness change → visible (ms, log)")
        ax.set_ylabel("fraction of changes")
        ax.set_title(f"{r['pods']:,} pods")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="lower right")
    fig.suptitle("Pod readiness → discovery latency CDF (cargo bench --bench controller)\n" + subtitle(record), fontsize=9)
    save(fig, out, "controller_latency_cdf.png", written)

    fig, ax = plt.subplots(figsize=(6, 4))
    pods = [r["pods"] for r in runs]
    series = [
        ("waymark_bytes_per_pod_not_ready", "Waymark, pods not Ready", WAYMARK, "o-"),
        ("waymark_bytes_per_pod_ready", "Waymark, all Ready", WAYMARK, "s--"),
        ("coredns_bytes_per_pod_not_ready", "CoreDNS, pods not Ready", PEERS[0], "o-"),
        ("coredns_bytes_per_pod_ready", "CoreDNS, all Ready", PEERS[0], "s--"),
    ]
    for key, label, color, style in series:
        pts = [(p, r[key]) for p, r in zip(pods, runs) if r.get(key) is not None]
        if pts:
            ax.plot([p for p, _ in pts], [v for _, v in pts], style, color=color, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("pods")
    ax.set_ylabel("RSS growth per pod (bytes)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Memory per pod\n" + subtitle(record), fontsize=9)
    save(fig, out, "controller_memory.png", written)


def api(record, out, written):
    runs = record["data"]["runs"]
    conns = sorted({r["connections"] for r in runs})
    fig, axes = plt.subplots(1, len(conns), figsize=(5 * len(conns), 4), squeeze=False)
    for ax, c in zip(axes[0], conns):
        for r in [r for r in runs if r["connections"] == c]:
            pct = r.get("percentiles_ms", {})
            ps = sorted(pct, key=float)
            color = WAYMARK if r["server"] == "waymark" else PEERS[0]
            ax.plot([pct[p] for p in ps], [float(p) / 100 for p in ps], "o-", markersize=3,
                    color=color, label=f"{r['server']} ({r.get('rps', 0):,.0f} req/s)")
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"{c} connections")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="lower right")
    fig.suptitle("DiscoverInstances latency CDF, Waymark vs nginx serving the same body (scripts/bench-api.sh)\n"
                 + subtitle(record), fontsize=9)
    save(fig, out, "api_latency_cdf.png", written)


def dns(record, out, written):
    servers = record["data"]["servers"]
    names = [s["server"] for s in servers]
    colors = [WAYMARK if n == "waymark" else PEERS[i % len(PEERS)] for i, n in enumerate(names)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.bar(names, [s.get("max_qps", 0) for s in servers], color=colors)
    for i, s in enumerate(servers):
        a.plot([i] * len(s.get("rounds_qps", [])), s.get("rounds_qps", []), "k.", markersize=4)
    a.yaxis.set_major_formatter(THOUSANDS)
    a.set_ylabel("queries/s (best round; dots: every round)")
    a.set_title("throughput")
    a.grid(alpha=0.3, axis="y")
    avg = [s.get("paced_avg_ms", 0) for s in servers]
    sd = [s.get("paced_sd_ms", 0) for s in servers]
    # A latency is not negative: the lower bar stops at zero.
    b.bar(names, avg, color=colors, yerr=[[min(a, d) for a, d in zip(avg, sd)], sd], capsize=4)
    b.set_ylabel("latency at a fixed rate (ms, avg ± sd)")
    b.set_title("latency")
    b.grid(alpha=0.3, axis="y")
    fig.suptitle("Authoritative DNS (scripts/bench-dns.sh, dnsperf)\n" + subtitle(record), fontsize=9)
    save(fig, out, "dns.png", written)


def health(record, out, written):
    rows = record["data"]["thresholds"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, r in enumerate(rows):
        t = r["failure_threshold"]
        ax.plot([t] * len(r["out_of_discover_seconds"]), r["out_of_discover_seconds"], "o", color=WAYMARK,
                label="out of DiscoverInstances" if i == 0 else None)
        ax.plot([t + 0.1] * len(r["out_of_dns_seconds"]), r["out_of_dns_seconds"], "^", color=PEERS[1],
                label="out of DNS" if i == 0 else None)
        ax.plot([t - 0.3, t + 0.3], [r["bound_seconds"]] * 2, "k--", label="threshold × interval" if i == 0 else None)
    ax.set_xlabel("FailureThreshold")
    ax.set_ylabel("instance down → removed (s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_xticks([r["failure_threshold"] for r in rows])
    ax.set_title(f"Active checks, {record['data']['instances']:,} instances every "
                 f"{record['data']['interval_seconds']} s\n{subtitle(record)}", fontsize=9)
    save(fig, out, "health.png", written)


def main():
    results, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    written = []
    for bench, draw in [("restore", restore), ("controller", controller), ("api", api), ("dns", dns),
                        ("health", health)]:
        record = load(results, bench)
        if record is not None:
            draw(record, out, written)
    if not written:
        sys.exit(f"no bench results in {results} (run a bench first: see docs/benchmarks.md)")
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
