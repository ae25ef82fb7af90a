#!/usr/bin/env python3
"""Plots a dashboard's panels from live data: each panel's PromQL, as generate.py defines
it, queried over the last minutes through a Prometheus's HTTP API (query_range) and drawn
with matplotlib, one chart per panel in the dashboard's layout. Grafana cannot be
installed from this machine's package registries, so this stands in for its rendering:
the same expressions, the same data.

usage: dashboards/plot.py PROMETHEUS_URL OUT.png [--dashboard overview] [--minutes 10]
                          [--instance REGEX] [--step 5]
"""

import argparse
import json
import math
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import generate  # noqa: E402


def query_range(base, expr, start, end, step):
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{q}", timeout=30) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        raise RuntimeError(f"{expr}: {answer}")
    return answer["data"]["result"]


def legend_of(template, metric):
    return template.replace("{{", "{").replace("}}", "}").format_map(_Missing(metric))


class _Missing(dict):
    def __missing__(self, key):
        return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prometheus")
    ap.add_argument("out")
    ap.add_argument("--dashboard", default="overview")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--instance", default=".+")
    ap.add_argument("--step", type=int, default=5)
    a = ap.parse_args()
    title, panels = generate.DASHBOARDS[a.dashboard]
    end = time.time()
    start = end - a.minutes * 60
    rows = math.ceil(len(panels) / 2)
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3.2 * rows), squeeze=False)
    for i, (name, unit, targets) in enumerate(panels):
        ax = axes[i // 2][i % 2]
        for expr, legend in targets:
            expr = expr.replace("$instance", a.instance).replace(
                "$__rate_interval", f"{max(4 * a.step, 15)}s")
            for series in query_range(a.prometheus, expr, start, end, a.step):
                xs = [(float(t) - end) / 60 for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, label=legend_of(legend, series["metric"])[:40])
        ax.set_title(f"{name} [{unit}]", fontsize=10)
        ax.set_xlabel("minutes ago", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper left")
    for j in range(len(panels), rows * 2):
        axes[j // 2][j % 2].axis("off")
    fig.suptitle(f"{title} (plotted by dashboards/plot.py from Prometheus)", fontsize=12)
    fig.tight_layout()
    fig.savefig(a.out, dpi=80)


if __name__ == "__main__":
    main()
