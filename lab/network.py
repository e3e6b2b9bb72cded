"""The lab bridge on the host and NAT from it to the package registries.

Every iptables rule we add carries the comment RULE_COMMENT, so teardown
removes exactly ours, including rules left by an earlier, interrupted run.
"""

from pathlib import Path

from lab.progress import run
from lab.settings import BRIDGE, GATEWAY, NETWORK, RULE_COMMENT, RUN_DIR

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# The host's ip_forward before the lab changed it, restored by `down`.
SAVED_IP_FORWARD = RUN_DIR / "ip_forward.orig"

RULES = [
    ("nat", "POSTROUTING", ["-s", str(NETWORK), "!", "-d", str(NETWORK), "-j", "MASQUERADE"]),
    ("filter", "FORWARD", ["-i", BRIDGE, "-j", "ACCEPT"]),
    ("filter", "FORWARD", ["-o", BRIDGE, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"]),
]


def bridge_exists():
    return run(["ip", "link", "show", BRIDGE], check=False).returncode == 0


def up():
    if not bridge_exists():
        # No forwarding delay: a booting node's port forwards at once.
        run(["ip", "link", "add", BRIDGE, "type", "bridge", "forward_delay", "0"])
    run(["ip", "addr", "replace", f"{GATEWAY}/{NETWORK.prefixlen}", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    if not SAVED_IP_FORWARD.exists():
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        SAVED_IP_FORWARD.write_text(IP_FORWARD.read_text())
    IP_FORWARD.write_text("1\n")
    for table, chain, spec in RULES:
        tagged = spec[:-2] + ["-m", "comment", "--comment", RULE_COMMENT] + spec[-2:]
        if run(["iptables", "-t", table, "-C", chain, *tagged], check=False).returncode != 0:
            run(["iptables", "-t", table, "-I", chain, *tagged])


def our_rules():
    """Our rules as iptables -D argument lists, found by their comment."""
    found = []
    for table in ("nat", "filter"):
        for line in run(["iptables", "-t", table, "-S"]).stdout.splitlines():
            if line.startswith("-A ") and f"--comment {RULE_COMMENT}" in line:
                found.append(["iptables", "-t", table, "-D", *line.split()[1:]])
    return found


def down():
    for delete in our_rules():
        run(delete)
    if bridge_exists():
        run(["ip", "link", "del", BRIDGE])
    if SAVED_IP_FORWARD.exists():
        IP_FORWARD.write_text(SAVED_IP_FORWARD.read_text())
        SAVED_IP_FORWARD.unlink()
