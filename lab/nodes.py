"""Lab nodes: systemd-nspawn machines booted from the shared image.

A node's disk is an overlay: the image below, the node's own changes above
(NODES_DIR/NAME/upper), so a crashed node boots again with its data, as a
server would after a power loss, and `down` throws the changes away.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from lab.image import NODE_WHEELHOUSE
from lab.progress import CLEAN_ENV, LabError, run
from lab.settings import BRIDGE, GATEWAY, NETWORK, NODES_DIR, WHEELHOUSE


class Node:
    def __init__(self, name, address=None):
        self.name = name
        self.address = address
        self.dir = NODES_DIR / name
        self.upper = self.dir / "upper"
        self.work = self.dir / "work"
        self.root = self.dir / "root"
        self.pidfile = self.dir / "nspawn.pid"
        self.console = self.dir / "console.log"
        self.meta = self.dir / "node.json"
        self.process = None  # systemd-nspawn, when booted by this bin/lab

    # -- what is running ---------------------------------------------------

    def nspawn_pid(self):
        try:
            pid = int(self.pidfile.read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) and b"systemd-nspawn" in _cmdline(pid) else None

    def leader_pid(self):
        """The node's PID 1 (its systemd), seen from the host."""
        pid = self.nspawn_pid()
        if pid is None:
            return None
        for child in _children(pid):
            if _alive(child) and _nspid(child) == 1:
                return child
        return None

    def is_running(self):
        return self.leader_pid() is not None

    def is_mounted(self):
        return _is_mountpoint(self.root)

    def image(self):
        try:
            return Path(json.loads(self.meta.read_text())["image"])
        except (OSError, ValueError, KeyError):
            return None

    # -- life cycle --------------------------------------------------------

    def create(self, image):
        """Mount a fresh or existing disk on `image` and write the node's identity."""
        if self.image() not in (None, image):
            # The image changed under the node's disk: start from a clean disk.
            self.destroy()
        for path in (self.upper, self.work, self.root):
            path.mkdir(parents=True, exist_ok=True)
        self.meta.write_text(json.dumps({"image": str(image), "address": self.address}))
        if not self.is_mounted():
            run([
                "mount", "-t", "overlay", "overlay", "-o",
                f"lowerdir={image},upperdir={self.upper},workdir={self.work}",
                str(self.root),
            ])
        self._write_identity()

    def _write_identity(self):
        etc = self.root / "etc"
        (etc / "hostname").write_text(self.name + "\n")
        machine_id = etc / "machine-id"
        if not machine_id.read_text().strip():
            machine_id.write_text(hashlib.md5(self.name.encode()).hexdigest() + "\n")
        # Sorts before the image's 80-container-host0.network, which would
        # otherwise give the node only a link-local address.
        network = etc / "systemd" / "network" / "10-host0.network"
        network.parent.mkdir(parents=True, exist_ok=True)
        network.write_text(
            "[Match]\nName=host0\n\n[Network]\n"
            f"Address={self.address}/{NETWORK.prefixlen}\nGateway={GATEWAY}\n"
            # IPv4 only: waiting for IPv6 would hold network-online back.
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        )
        (etc / "salt" / "minion_id").write_text(self.name)

    def install_minion_key(self, private_pem, public_pem):
        pki = self.root / "etc" / "salt" / "pki" / "minion"
        pki.mkdir(parents=True, exist_ok=True, mode=0o700)
        (pki / "minion.pub").write_text(public_pem)
        private = pki / "minion.pem"
        private.write_text(private_pem)
        private.chmod(0o400)

    def boot(self):
        """Start the machine (returns at once; see wait_until_running)."""
        with open(self.console, "ab") as console:
            process = subprocess.Popen(
                [
                    "systemd-nspawn", "--register=no", "--keep-unit", "--boot",
                    f"--network-bridge={BRIDGE}", "--machine", self.name,
                    "--directory", str(self.root), "--console=passive",
                    "--resolv-conf=copy-host",
                    f"--bind-ro={WHEELHOUSE}:{NODE_WHEELHOUSE}",
                ],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True, env=CLEAN_ENV,
            )
        self.pidfile.write_text(str(process.pid))
        self.process = process

    def _nspawn_exited(self):
        if self.process is not None:
            return self.process.poll() is not None
        return self.nspawn_pid() is None

    def wait_until_running(self, timeout=120):
        """Wait until the node's systemd reports the system up; return its state
        (running, or degraded with the failed units)."""
        deadline = time.monotonic() + timeout
        state = "not booted"
        while time.monotonic() < deadline:
            if self._nspawn_exited():
                raise LabError(f"{self.name} stopped while booting; see {self.console}, "
                               f"which ends: {self.console_tail()}")
            if self.is_running():
                result = self.exec(["systemctl", "is-system-running", "--wait"], timeout=timeout)
                state = result.stdout.strip()
                if state in ("running", "degraded"):
                    if state == "degraded":
                        failed = self.exec(["systemctl", "--failed", "--plain", "--no-legend"])
                        state += " (failed: " + " ".join(
                            line.split()[0] for line in failed.stdout.splitlines()
                        ) + ")"
                    return state
            time.sleep(0.5)
        raise LabError(f"{self.name} did not finish booting in {timeout} s (state: {state})")

    def console_tail(self, lines=5):
        """The last lines of the node's console, on one line."""
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())

    def boot_and_wait(self):
        """Boot the node and wait until it runs. After a hard power-off, or
        a lab taken down just before, the host end of the node's network
        link can outlive it, and
        systemd-nspawn then exits at once ("Failed to add new veth
        interfaces (NAME:host0): File exists"): that link is removed (the
        kernel may be removing it already) and the node booted once more."""
        try:
            self.boot()
            return self.wait_until_running()
        except LabError:
            leftover = re.search(r"Failed to add new veth interfaces \((\S+):host0\): File exists",
                                 self.console_tail(lines=20))
            if not (self._nspawn_exited() and leftover):
                raise
        _remove_link(leftover.group(1))
        self.boot()
        return self.wait_until_running()

    def system_state(self):
        if not self.is_running():
            return "down"
        return self.exec(["systemctl", "is-system-running"]).stdout.strip() or "unknown"

    def exec(self, argv, timeout=None, capture=True):
        """Run a command inside the node, with a clean environment."""
        leader = self.leader_pid()
        if leader is None:
            raise LabError(f"{self.name} is not running")
        return subprocess.run(
            ["nsenter", "-t", str(leader), "-a", "env", "-i",
             *[f"{key}={value}" for key, value in CLEAN_ENV.items()], *argv],
            capture_output=capture, text=True, timeout=timeout,
        )

    def crash(self):
        """Power the node off hard: SIGKILL to its PID 1 ends every process in it
        at once (killing only systemd-nspawn would leave the machine running)."""
        for pid in (self.leader_pid(), self.nspawn_pid()):
            if pid:
                os.kill(pid, signal.SIGKILL)
        self._wait_stopped(10)

    def poweroff(self, timeout=40):
        """Shut the node down cleanly; power it off hard if that takes too long."""
        if self.is_running():
            self.exec(["systemctl", "poweroff", "--no-block"], timeout=10)
            if self._wait_stopped(timeout):
                return
        self.crash()

    def _wait_stopped(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.nspawn_pid() is None and self.leader_pid() is None:
                return True
            time.sleep(0.3)
        return False

    def unmount(self):
        if self.is_mounted():
            run(["umount", str(self.root)])

    def destroy(self):
        """Stop the node and remove its disk."""
        self.poweroff()
        self.unmount()
        run(["rm", "-rf", str(self.dir)])


def known_nodes():
    """Every node with a directory under NODES_DIR, from this run or an earlier one."""
    if not NODES_DIR.is_dir():
        return []
    return [Node(path.name) for path in sorted(NODES_DIR.iterdir()) if path.is_dir()]


def _alive(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie is dead; the field after the parenthesised name is the state.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _children(pid):
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return children


def _nspid(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except OSError:
        pass
    return None


def _is_mountpoint(path):
    target = str(path)
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


def _remove_link(name, timeout=10):
    """Delete a host network link and wait until it is gone; a link the kernel
    is already tearing down may vanish between the check and the delete."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run(["ip", "link", "show", name], check=False).returncode != 0:
            return
        run(["ip", "link", "delete", name], check=False)
        time.sleep(0.3)
    raise LabError(f"the host network link {name} of a stopped node did not go away in {timeout} s")
