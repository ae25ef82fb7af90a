#!/usr/bin/env python3
"""Writes the Grafana dashboards of Limes (dashboards/*.json) from the definitions below.

Each dashboard is a list of rows of panels; each panel names its PromQL expressions. The
expressions use two Grafana variables: `$instance` (the nodes shown, a regex over the
`instance` target label) and `$__rate_interval`. `--check` fails when a committed JSON
file differs from what this writes (CI runs it); `--exprs` prints every expression, one
per line, as `dashboard<TAB>panel<TAB>expr` (the observability test queries each against
a real Prometheus scraping a real node).

usage: dashboards/generate.py [--check | --exprs]
"""

import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
SEL = 'instance=~"$instance"'
RATE = "$__rate_interval"


def rate(metric, by=None, where=""):
    """sum [by (...)] (rate(metric{instance, where}[$__rate_interval]))"""
    labels = SEL + ("," + where if where else "")
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({metric}{{{labels}}}[{RATE}]))"


def gauge(metric, by=None, where=""):
    labels = SEL + ("," + where if where else "")
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({metric}{{{labels}}})"


def quantile(q, metric, where=""):
    labels = SEL + ("," + where if where else "")
    return (
        f"histogram_quantile({q}, sum by (le) "
        f"(rate({metric}_bucket{{{labels}}}[{RATE}])))"
    )


# (title, unit, [(expr, legend)]), laid out two to a row.
DASHBOARDS = {
    "overview": (
        "Limes: overview",
        [
            ("Calls per second (INVITEs received)", "reqps",
             [(rate("limes_sip_requests_received_total", where='method="INVITE"'), "INVITE")]),
            ("Answer ratio (final responses that were 2xx)", "percentunit",
             [(rate("limes_sip_responses_sent_total", where='class="2xx"') + " / clamp_min("
               + rate("limes_sip_responses_sent_total", where='class!="1xx"') + ", 1e-9)",
               "2xx share")]),
            ("Registrations per second, by result", "reqps",
             [(rate("limes_registrar_registrations_total", by="result"), "{{result}}")]),
            ("Bindings held", "short",
             [(gauge("limes_registrar_contacts"), "bindings"),
              (gauge("limes_registrar_aors"), "AoRs")]),
            ("Responses sent, by class", "reqps",
             [(rate("limes_sip_responses_sent_total", by="class"), "{{class}}")]),
            ("Messages dropped, by reason", "pps",
             [(rate("limes_sip_drops_total", by="reason"), "{{reason}}")]),
            ("Authentication failures and flood limiting", "reqps",
             [(rate("limes_auth_failures_total", by="reason"), "auth: {{reason}}"),
              (rate("limes_flood_limited_total"), "flood limited"),
              (rate("limes_auth_blocked_requests_total"), "blocked source")]),
            ("Proxy latency (request received to forwarded)", "s",
             [(quantile(q, "limes_proxy_latency_seconds", 'phase="request"'), f"p{int(q * 100)}")
              for q in (0.5, 0.95, 0.99)]),
            ("Process CPU (cores)", "short",
             [(f"rate(process_cpu_seconds_total{{job=\"limes\",{SEL}}}[{RATE}])", "{{instance}}")]),
            ("Process memory (resident)", "bytes",
             [(f"process_resident_memory_bytes{{job=\"limes\",{SEL}}}", "{{instance}}")]),
        ],
    ),
    "dialogs": (
        "Limes: dialogs, profiles and limits",
        [
            ("Calls up, by state", "short",
             [(gauge("limes_dialogs", by="state"), "{{state}}")]),
            ("Calls ended, by who or what ended them", "reqps",
             [(rate("limes_dialogs_ended_total", by="ended_by"), "{{ended_by}}")]),
            ("Calls in each profile", "short",
             [(gauge("limes_dialog_profile_size", by="profile"), "{{profile}}")]),
            ("Calls refused by a limit, by profile", "reqps",
             [(rate("limes_dialog_limit_rejections_total", by="profile"), "{{profile}}")]),
            ("Call duration (answered calls, p50 / p95)", "s",
             [(quantile(q, "limes_dialog_duration_seconds"), f"p{int(q * 100)}")
              for q in (0.5, 0.95)]),
            ("CDRs", "short",
             [(rate("limes_cdrs_written_total"), "written / s"),
              (gauge("limes_cdrs_queued"), "waiting for the collector"),
              (rate("limes_cdr_post_failures_total"), "collector failures / s")]),
        ],
    ),
    "trunks": (
        "Limes: trunks and destinations",
        [
            ("Destinations down or drained", "short",
             [(gauge("limes_trunk_destination_state", by="trunk, destination, state",
                     where='state!="active"'), "{{trunk}} {{destination}} {{state}}")]),
            ("Branches to trunk destinations", "reqps",
             [(rate("limes_trunk_calls_total", by="trunk, destination"), "{{trunk}} {{destination}}")]),
            ("Failovers, by trunk and cause", "reqps",
             [(rate("limes_trunk_failovers_total", by="trunk, reason"), "{{trunk}} {{reason}}")]),
            ("OPTIONS pings, by result", "reqps",
             [(rate("limes_trunk_pings_total", by="trunk, result"), "{{trunk}} {{result}}")]),
            ("Routing decisions, by rule", "reqps",
             [(rate("limes_route_decisions_total", by="rule, action"), "{{rule}} ({{action}})")]),
            ("Requests answered without relaying, by reason", "reqps",
             [(rate("limes_route_rejections_total", by="reason"), "{{reason}}")]),
        ],
    ),
    "cluster": (
        "Limes: cluster and etcd",
        [
            ("Members seen by each node", "short",
             [(gauge("limes_cluster_members", by="instance"), "{{instance}}")]),
            ("Degraded (etcd does not answer)", "short",
             [(gauge("limes_cluster_degraded", by="instance"), "{{instance}}")]),
            ("Writes waiting for etcd", "short",
             [(gauge("limes_cluster_write_queue", by="instance"), "queued {{instance}}"),
              (gauge("limes_cluster_confirming", by="instance"), "REGISTERs waiting {{instance}}")]),
            ("etcd writes and failures", "ops",
             [(rate("limes_cluster_writes_total"), "written"),
              (rate("limes_cluster_failures_total"), "failed"),
              (rate("limes_cluster_confirmed_locally_total"), "REGISTERs answered from the journal")]),
            ("Watch age", "s",
             [(gauge("limes_cluster_watch_age_seconds", by="instance"), "{{instance}}")]),
            ("Revision seen", "short",
             [(gauge("limes_cluster_revision", by="instance"), "{{instance}}")]),
            ("etcd operation latency (p99), by kind", "s",
             [(f"histogram_quantile(0.99, sum by (le, kind) (rate(limes_cluster_operation_seconds_bucket{{{SEL}}}[{RATE}])))",
               "{{kind}}")]),
            ("etcd operation failures, by kind", "ops",
             [(rate("limes_cluster_operation_failures_total", by="kind"), "{{kind}}")]),
        ],
    ),
}


def dashboard(uid, title, panels):
    out = []
    for i, (name, unit, targets) in enumerate(panels):
        out.append({
            "id": i + 1,
            "type": "timeseries",
            "title": name,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [
                {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend,
                 "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                for j, (expr, legend) in enumerate(targets)
            ],
        })
    return {
        "uid": f"limes-{uid}",
        "title": title,
        "tags": ["limes", "sip"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "label": "Prometheus"},
            {"name": "instance", "type": "query", "label": "Node",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": 'label_values(limes_build_info, instance)',
             "includeAll": True, "multi": True, "allValue": ".+",
             "current": {"text": "All", "value": "$__all"}, "refresh": 2},
        ]},
        "panels": out,
    }


def rendered():
    return {
        f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
        for uid, (title, panels) in DASHBOARDS.items()
    }


def main():
    args = sys.argv[1:]
    if args == ["--exprs"]:
        for uid, (_, panels) in DASHBOARDS.items():
            for name, _, targets in panels:
                for expr, _ in targets:
                    print(f"{uid}\t{name}\t{expr}")
        return 0
    stale = []
    for name, text in rendered().items():
        path = HERE / name
        if args == ["--check"]:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        elif not args:
            path.write_text(text)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    if stale:
        print(f"stale dashboards (run dashboards/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
