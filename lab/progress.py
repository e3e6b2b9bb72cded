"""Progress lines and timings for long lab operations, and running commands."""

import subprocess
import sys
import threading
import time
from contextlib import contextmanager

# Node commands and image builds must not inherit the host's PIP_*, proxies
# or virtual environment.
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "TERM": "dumb",
}


class LabError(Exception):
    """A lab step failed; the message says which and why."""


def say(message):
    print(message, flush=True)


class Timings:
    def __init__(self):
        self.steps = []
        self.started = time.monotonic()

    @contextmanager
    def step(self, label):
        say(f"==> {label}")
        started = time.monotonic()
        yield
        elapsed = time.monotonic() - started
        self.steps.append((label, elapsed))
        say(f"    {label}: done in {elapsed:.1f} s")

    def report(self):
        say("timings:")
        for label, elapsed in self.steps:
            say(f"    {elapsed:7.1f} s  {label}")
        say(f"    {time.monotonic() - self.started:7.1f} s  total")


def run(argv, check=True, env=None, **kwargs):
    """Run a command, capture its output, and raise LabError naming it on failure."""
    result = subprocess.run(argv, capture_output=True, text=True, env=env, **kwargs)
    if check and result.returncode != 0:
        raise LabError(
            f"{' '.join(map(str, argv))} exited {result.returncode}:\n"
            f"{(result.stdout + result.stderr).strip()}"
        )
    return result


def run_logged(argv, log_path, label, env=None, every=15):
    """Run a long command with its output in log_path, printing its latest
    line every few seconds so that the operator sees it move."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        done = threading.Event()

        def heartbeat():
            started = time.monotonic()
            while not done.wait(every):
                last = _last_line(log_path)
                say(f"    {label}: {time.monotonic() - started:.0f} s  {last[:100]}")

        threading.Thread(target=heartbeat, daemon=True).start()
        returncode = process.wait()
        done.set()
    if returncode != 0:
        tail = "\n".join(open(log_path).read().splitlines()[-20:])
        raise LabError(f"{label} failed (exit {returncode}); log {log_path}:\n{tail}")


def _last_line(path):
    try:
        lines = open(path, errors="replace").read().strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def fail(message):
    print(f"bin/lab: {message}", file=sys.stderr, flush=True)
    return 1
