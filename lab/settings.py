"""Where the lab lives on the host, and how its network is laid out."""

import ipaddress
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent

# Kept across `bin/lab down`: the Debian image and the wheelhouse are slow to make.
CACHE_DIR = Path("/var/cache/airflow-lab")
WHEELHOUSE = CACHE_DIR / "wheelhouse"
# Everything of a running lab (node disks, master state); `down` removes it.
RUN_DIR = Path("/var/lib/airflow-lab")
NODES_DIR = RUN_DIR / "nodes"
SALT_ROOT = RUN_DIR / "salt"
STATE_FILE = RUN_DIR / "lab.json"

MASTER_CONF_DIR = REPO / "etc" / "salt"
LAB_MASTER_CONF = MASTER_CONF_DIR / "master.d" / "lab.conf"
VENV_BIN = REPO / ".venv" / "bin"

BRIDGE = "airflowlab0"
NETWORK = ipaddress.ip_network("10.11.12.0/24")
GATEWAY = "10.11.12.1"
# Tags our iptables rules so that `down` (and a later `up`) finds exactly them.
RULE_COMMENT = "airflow-lab"

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"

LAB_PILLAR = REPO / "pillar" / "lab" / "cluster.sls"
LAB_SECRETS = REPO / "pillar" / "lab" / "secrets.sls"


def lab_balancer_address():
    """The address of the lab's load balancer (its node with the haproxy role)."""
    cluster = yaml.safe_load(LAB_PILLAR.read_text())["cluster"]
    for node in cluster["nodes"].values():
        if "haproxy" in node["roles"]:
            return node["address"]
    return None


def lab_nodes():
    """Return {name: address} for every node of the lab pillar, in order."""
    cluster = yaml.safe_load(LAB_PILLAR.read_text())["cluster"]
    nodes = {}
    for name, node in cluster["nodes"].items():
        address = ipaddress.ip_address(node["address"])
        if address not in NETWORK or str(address) == GATEWAY:
            raise SystemExit(
                f"{LAB_PILLAR}: cluster:nodes:{name}:address {address} must be in "
                f"{NETWORK} and not the host's {GATEWAY}"
            )
        nodes[name] = str(address)
    return nodes
