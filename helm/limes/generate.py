#!/usr/bin/env python3
"""Writes the generated parts of the Limes chart, so that none can drift from its source:

- values.yaml: values.head.yaml (the chart's own values, written by hand) followed by
  `config`, every key of the node's configuration file with its default and its comment,
  read from the defaults block of the repository's README ("## Configuration"); the keys
  the chart sets itself (listen addresses, state directory, name, secret, token, etcd)
  are left out;
- values.schema.json: every value's type, from its default (objects closed: a misspelt
  key is refused), with the ranges and choices below;
- README.md: the table of every value, from the `# --` comments of values.yaml;
- files/alerts.yml: the alert rules of dashboards/alerts.yml, for the PrometheusRule.

usage: helm/limes/generate.py [--check]   (--check: fail when a file is stale)
"""

import json
import pathlib
import re
import sys
import tomllib

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# Set by the chart (arguments and environment of the container), not by `config`.
SET_BY_CHART = {
    ("node", "name"), ("node", "state_dir"), ("node", "secret"), ("sip", "listen"),
    ("admin", "listen"), ("admin", "token"), ("cluster", "etcd"),
}

# Lists of tables of the configuration file, empty by default.
TABLES = {
    "subscriber": "[[subscriber]] entries: user, domain, password or ha1 (README: Subscribers)",
    "trusted": "[[trusted]] peers: cidr, proto, from_pattern, tag",
    "address": "[[address]] group entries: group, cidr, port, proto, tag",
    "address_group": "[[address_group]] names: group, name",
    "trunk": "[[trunk]] carriers' trunks (README: Trunks and routing rules)",
    "route": "[[route]] routing rules; none: the default policy",
}
DIALOG_TABLES = {
    "profile": "[[dialog.profile]] profiles: name, value",
    "class": "[[dialog.class]] classes of callees",
    "limit": "[[dialog.limit]] call limits: profile, max, status, retry_after_s",
}

# Constraints beyond the type (JSON Schema), by value path.
CONSTRAINTS = {
    "replicas": {"minimum": 1},
    "sip.port": {"minimum": 1, "maximum": 65535},
    "admin.port": {"minimum": 1, "maximum": 65535},
    "sip.service.type": {"enum": ["LoadBalancer", "NodePort", "ClusterIP"]},
    "sip.service.externalTrafficPolicy": {"enum": ["Local", "Cluster"]},
    "image.pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "etcd.replicas": {"enum": [1, 3, 5]},
    "cluster.etcdEndpoints": {"items": {"type": "string", "pattern": "^https?://"}},
    "secrets.nodeSecret": {"anyOf": [{"maxLength": 0}, {"minLength": 16}]},
    "terminationGracePeriodSeconds": {"minimum": 1},
    "preStopSleepSeconds": {"minimum": 0},
    "podDisruptionBudget.maxUnavailable": {"minimum": 1},
    "config.flood.action": {"enum": ["reply", "drop"]},
    "config.log.format": {"enum": ["text", "json"]},
}
# Values whose content is the operator's (free-form objects or lists of objects).
OPEN = {"resources", "nodeSelector", "podAnnotations", "tolerations", "imagePullSecrets",
        "sip.service.annotations", "serviceMonitor.labels", "prometheusRule.labels"}


def readme_defaults():
    """The README's defaults block: its text, as lines."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1]
    block = section.split("```toml\n", 1)[1].split("\n```", 1)[0]
    return block.splitlines()


def _empty_section(out, i):
    """Whether line i is a section's comment or key line and the section has no keys."""
    line = out[i]
    j = i + 1 if line.startswith("  # -- [") else i
    if not re.match(r"^  [a-z_]+:$", out[j]):
        return False
    return j + 1 >= len(out) or not out[j + 1].startswith("    ")


def config_yaml():
    """`config:` with every key of the README's defaults and its comment."""
    lines = readme_defaults()
    values = tomllib.loads("\n".join(lines))
    out = ["# -- The node's configuration file (limes.toml in a ConfigMap; README: Configuration).",
           "# Every key with its default; the listen addresses, state directory, name, secret,",
           "# admin token and etcd endpoints are set by the chart.", "config:"]
    section, note = None, ""
    for line in lines:
        m = re.match(r"^\[([a-z_]+)\]\s*(?:#\s*(.*))?$", line)
        if m:
            section, note = m.group(1), m.group(2) or ""
            out.append(f"  # -- [{section}]{': ' + note if note else ''}")
            out.append(f"  {section}:")
            continue
        m = re.match(r"^([a-z_0-9]+)\s*=\s*(.*?)\s*(?:#\s*(.*))?$", line)
        if m and section:
            key = m.group(1)
            if (section, key) in SET_BY_CHART:
                continue
            doc = m.group(3) or (f"{note}: {key}" if note else key)
            out.append(f"    # -- {doc}")
            out.append(f"    {key}: {json.dumps(values[section][key])}")
            continue
        m = re.match(r"^\s+#\s*(.*)$", line)
        if m and section and out[-1].startswith("    ") and not out[-1].lstrip().startswith("#"):
            # A comment continued on the next line: joined to the key's.
            key_line = out.pop()
            out[-1] += " " + m.group(1)
            out.append(key_line)
    # A section whose keys the chart sets all is left out.
    out = [l for i, l in enumerate(out)
           if not (re.match(r"^  (# -- \[)?[a-z_]+", l) and i + 2 < len(out) + 2
                   and _empty_section(out, i))]
    for name, what in DIALOG_TABLES.items():
        out.insert(out.index("  dialog:") + 1, f"    {name}: []")
        out.insert(out.index("  dialog:") + 1, f"    # -- {what}")
    for name, what in TABLES.items():
        out.append(f"  # -- {what}")
        out.append(f"  {name}: []")
    return "\n".join(out) + "\n"


def schema_of(value, path):
    c = CONSTRAINTS.get(path, {})
    if path in OPEN:
        return {"type": "array" if isinstance(value, list) else "object", **c}
    if isinstance(value, bool):
        s = {"type": "boolean"}
    elif isinstance(value, int):
        s = {"type": "integer"}
    elif isinstance(value, float):
        s = {"type": "number"}
    elif isinstance(value, str):
        s = {"type": "string"}
    elif isinstance(value, list):
        name = path.split(".")[-1]
        if value:
            items = schema_of(value[0], path + "[]")
        elif name in TABLES or name in DIALOG_TABLES:
            items = {"type": "object"}
        else:
            items = {"type": "string"}
        s = {"type": "array", "items": items}
    elif isinstance(value, dict):
        s = {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: schema_of(v, f"{path}.{k}" if path else k) for k, v in value.items()},
        }
    else:
        s = {}
    if "items" in c and s.get("type") == "array":
        s["items"] = c["items"]
        c = {k: v for k, v in c.items() if k != "items"}
    s.update(c)
    return s


def readme(values_text):
    """The values table, from the `# --` comments."""
    data = yaml.safe_load(values_text)
    rows = []
    path = []
    doc = []
    for line in values_text.splitlines():
        m = re.match(r"^(\s*)# -- (.*)$", line)
        if m:
            doc = [m.group(2)]
            continue
        m = re.match(r"^(\s*)# (.*)$", line)
        if m and doc:
            doc.append(m.group(2))
            continue
        m = re.match(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):", line)
        if not m:
            doc = []
            continue
        depth = len(m.group(1)) // 2
        path = path[:depth] + [m.group(2)]
        if doc:
            value = data
            for p in path:
                value = value[p]
            shown = json.dumps(value)
            kind = "object" if isinstance(value, dict) else "list" if isinstance(value, list) else (
                "bool" if isinstance(value, bool) else "int" if isinstance(value, int) else "string")
            rows.append(f"| `{'.'.join(path)}` | {kind} | `{shown}` | {' '.join(doc)} |")
        doc = []
    head = (HERE / "README.head.md").read_text()
    return head + "| value | type | default | meaning |\n| --- | --- | --- | --- |\n" + "\n".join(rows) + "\n"


def rendered():
    values = (HERE / "values.head.yaml").read_text() + config_yaml()
    data = yaml.safe_load(values)
    schema = {
        "$schema": "https://json-schema.org/draft-07/schema#",
        "title": "Values of the Limes chart (generated by generate.py)",
        **schema_of(data, ""),
    }
    return {
        "values.yaml": values,
        "values.schema.json": json.dumps(schema, indent=2) + "\n",
        "README.md": readme(values),
        "files/alerts.yml": (ROOT / "dashboards/alerts.yml").read_text(),
    }


def main():
    check = sys.argv[1:] == ["--check"]
    if sys.argv[1:] and not check:
        print(__doc__, file=sys.stderr)
        return 2
    stale = []
    for name, text in rendered().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale (run helm/limes/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
