#!/usr/bin/python3
"""Receive Airflow's StatsD metrics over UDP and serve them to Prometheus.

Written by Salt (salt/monitoring/files/statsd_bridge.py) on the monitoring
node. The Prometheus project's statsd_exporter is not packaged for Debian
12; this bridge does its part for Airflow: it reads a mapping file in the
statsd_exporter's format (glob and regex matches, the Airflow Helm chart's
metric names) and serves the metrics at /metrics with the exporter's names
and types (a counter keeps its name, without "_total"; a timer is a
summary in seconds). Each series also carries the node that sent it, by
its address (--node-names), so that every scheduler's heartbeat is seen on
its own. Only the Python standard library and PyYAML.

    statsd_bridge.py --statsd-address 10.11.12.5:9125 --web-address 10.11.12.5:9102 \\
        --mapping /etc/prometheus/airflow_statsd_mapping.yml --node-names /etc/prometheus/nodes.yml
"""

import argparse
import http.server
import re
import socket
import socketserver
import sys
import threading
import time

import yaml

TYPES = {"c": "counter", "g": "gauge", "ms": "summary", "h": "summary", "d": "summary"}
OWN_METRICS = {
    "statsd_bridge_lines_total": "StatsD lines received.",
    "statsd_bridge_lines_rejected_total":
        "StatsD lines dropped: not StatsD, a negative counter, or a name seen as another type.",
}


def split_address(text):
    """HOST:PORT, [IPV6]:PORT -> (host, port)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def escape_name(name):
    """A StatsD name as a Prometheus metric name, as statsd_exporter makes it
    when no mapping matches: every other character becomes "_"."""
    escaped = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return "_" + escaped if escaped[:1].isdigit() else escaped


def compile_mappings(mappings):
    """The mapping file's ``mappings`` as (regex, name, labels): a glob's
    "*" matches one dot-separated part or a piece of one."""
    compiled = []
    for mapping in mappings:
        if mapping.get("match_type", "glob") == "regex":
            pattern = mapping["match"]
        else:
            pattern = "".join("([^.]+)" if part == "*" else re.escape(part)
                              for part in re.split(r"(\*)", mapping["match"]))
        compiled.append((re.compile(pattern + r"\Z"), mapping["name"],
                         dict(mapping.get("labels") or {})))
    return compiled


def map_name(mappings, statsd_name):
    """(metric name, labels) of a StatsD name: the first mapping that
    matches, its $1... replaced by what the match's groups caught."""
    for regex, name, labels in mappings:
        match = regex.match(statsd_name)
        if match:
            def expand(template):
                return re.sub(r"\$(\d+)", lambda group: match.group(int(group.group(1))) or "",
                              str(template))
            return expand(name), {key: expand(value) for key, value in labels.items()}
    return escape_name(statsd_name), {}


def parse_line(line):
    """One StatsD line, NAME:VALUE|TYPE[|@RATE][|#TAGS], as (name, kind,
    value, sample rate); None when it is not one."""
    name, _, rest = line.partition(":")
    fields = rest.split("|")
    if not name or len(fields) < 2 or fields[1] not in TYPES:
        return None
    try:
        value = float(fields[0])
        rate = next((float(field[1:]) for field in fields[2:] if field.startswith("@")), 1.0)
    except ValueError:
        return None
    if rate <= 0:
        return None
    relative = fields[1] == "g" and fields[0][:1] in "+-"
    return name, ("relative gauge" if relative else fields[1]), value, rate


class Store:
    """The metrics received, by (name, labels): a counter's total, a
    gauge's value, a summary's count and sum."""

    def __init__(self, mappings, node_names):
        self.mappings = mappings
        self.node_names = node_names
        self.lock = threading.Lock()
        self.types = {}
        self.values = {}
        self.own = dict.fromkeys(OWN_METRICS, 0)

    def receive(self, datagram, sender):
        node = self.node_names.get(sender, sender)
        for line in datagram.decode("utf-8", "replace").splitlines():
            if line.strip():
                self.add(parse_line(line.strip()), node)

    def add(self, parsed, node):
        with self.lock:
            self.own["statsd_bridge_lines_total"] += 1
            if parsed is None:
                self.own["statsd_bridge_lines_rejected_total"] += 1
                return
            statsd_name, kind, value, rate = parsed
            name, labels = map_name(self.mappings, statsd_name)
            metric_type = TYPES.get(kind, "gauge")
            if (metric_type == "counter" and value < 0
                    or self.types.setdefault(name, metric_type) != metric_type):
                self.own["statsd_bridge_lines_rejected_total"] += 1
                return
            key = (name, tuple(sorted({**labels, "node": node}.items())))
            if metric_type == "counter":
                self.values[key] = self.values.get(key, 0.0) + value / rate
            elif kind == "relative gauge":
                self.values[key] = self.values.get(key, 0.0) + value
            elif metric_type == "gauge":
                self.values[key] = value
            else:
                seconds = value / 1000 if kind == "ms" else value
                count, total = self.values.get(key, (0.0, 0.0))
                self.values[key] = (count + 1 / rate, total + seconds / rate)

    def exposition(self):
        """The metrics in Prometheus' text format."""
        with self.lock:
            series = {}
            for (name, labels), value in sorted(self.values.items()):
                series.setdefault(name, []).append((labels, value))
            lines = []
            for name, metric_type in sorted(self.types.items()):
                lines += [f"# HELP {name} Airflow's StatsD metric, through the StatsD bridge.",
                          f"# TYPE {name} {metric_type}"]
                for labels, value in series.get(name, []):
                    if metric_type == "summary":
                        lines.append(f"{name}_count{label_text(labels)} {value[0]!r}")
                        lines.append(f"{name}_sum{label_text(labels)} {value[1]!r}")
                    else:
                        lines.append(f"{name}{label_text(labels)} {value!r}")
            for name, value in sorted(self.own.items()):
                lines += [f"# HELP {name} {OWN_METRICS[name]}", f"# TYPE {name} counter",
                          f"{name} {value}"]
            return "\n".join(lines) + "\n"


def label_text(labels):
    def escaped(value):
        return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
    return "{" + ",".join(f'{key}="{escaped(value)}"' for key, value in labels) + "}"


def serve(store, statsd_address, web_address):
    class StatsdHandler(socketserver.BaseRequestHandler):
        def handle(self):
            store.receive(self.request[0], self.client_address[0])

    class MetricsHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics here")
                return
            body = store.exposition().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass  # one line per scrape would fill the journal

    for server_class, handler, address in (
            (socketserver.ThreadingUDPServer, StatsdHandler, statsd_address),
            (http.server.ThreadingHTTPServer, MetricsHandler, web_address)):
        server_class.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        server = server_class(address, handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"receiving StatsD on {statsd_address}, serving /metrics on {web_address}", flush=True)
    while True:
        time.sleep(3600)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--statsd-address", required=True, help="HOST:PORT to receive StatsD on (UDP)")
    parser.add_argument("--web-address", required=True, help="HOST:PORT to serve /metrics on")
    parser.add_argument("--mapping", required=True, help="statsd_exporter mapping file (YAML)")
    parser.add_argument("--node-names", help="YAML file {address: node name} of the senders")
    args = parser.parse_args(argv)
    with open(args.mapping, encoding="utf-8") as stream:
        mappings = compile_mappings((yaml.safe_load(stream) or {}).get("mappings") or [])
    node_names = {}
    if args.node_names:
        with open(args.node_names, encoding="utf-8") as stream:
            node_names = yaml.safe_load(stream) or {}
    serve(Store(mappings, node_names), split_address(args.statsd_address),
          split_address(args.web_address))


if __name__ == "__main__":
    sys.exit(main())
