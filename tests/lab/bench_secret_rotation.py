"""Benchmark: orch.rotate for one secret at a time, on a lab that is up
(`bin/lab up`), each under a writer and a client polling the UI through the
load balancer five times a second; prints one BENCHMARK line per rotation
(the run's length, the UI's longest time without a healthy answer, the
longest pause between the writer's acknowledged writes), then rotates
everything back. Not part of `make test` (about ten minutes):

    .venv/bin/python -m tests.lab.bench_secret_rotation
"""

import copy
import tempfile
import time
from pathlib import Path

import yaml
from cryptography.fernet import Fernet

from lab.settings import LAB_SECRETS, lab_nodes
from tests.conftest import LAB_CA
from tests.lab.test_secret_rotation import (ORIGINAL, ORIGINAL_CA, UiPoller, Writer,
                                            new_certificate, odd, orchestrate, primary_now,
                                            write_gaps, write_secrets)


def rotate(title, change, current):
    """Rotate what change(secrets) changes; print its figures; the new secrets."""
    after = copy.deepcopy(current)
    change(after)
    writer = Writer(lab_nodes())
    writer.wait_flowing(primary_now())
    poller = UiPoller()
    poller.start()
    write_secrets(after)
    started = time.monotonic()
    returncode, output = orchestrate(lambda line: None, "orch.rotate")
    seconds = time.monotonic() - started
    ui, pauses = poller.stop(), write_gaps(writer.stop())
    print(f"BENCHMARK rotate {title}: exit {returncode}, run {seconds:.1f} s, UI without a "
          f"healthy answer {ui['seconds without a healthy answer']} s ({ui['failed']} of "
          f"{ui['polls']} polls failed), longest write pause {pauses} s", flush=True)
    assert returncode == 0, output
    return after


def main():
    certificate, key = new_certificate(Path(tempfile.mkdtemp()))
    LAB_CA.write_text(ORIGINAL_CA + certificate)
    fernet = Fernet.generate_key().decode()
    lab_fernet = yaml.safe_load(ORIGINAL)["airflow"]["fernet_key"]
    cases = [
        ("the TLS certificate", lambda s: s["haproxy"].update(
            tls={"certificate": certificate, "key": key})),
        ("the HAProxy stats password", lambda s: s["haproxy"].update(stats_password=odd("stats"))),
        ("the admin's and users' passwords", lambda s: [
            login.update(password=odd("login"))
            for login in [s["airflow"]["admin"], *s["airflow"]["users"].values()]]),
        ("Flower's password", lambda s: s["airflow"]["flower"].update(password=odd("flower"))),
        ("the webserver secret key", lambda s: s["airflow"].update(
            webserver_secret_key=odd("webserver"))),
        ("the replication password", lambda s: s["postgresql"].update(
            replication_password=odd("replication"))),
        ("the Airflow database password", lambda s: s["postgresql"].update(
            airflow_password=odd("db"))),
        ("the Redis password", lambda s: s["redis"].update(password=odd("redis"))),
        ("the Fernet key to [new, old]", lambda s: s["airflow"].update(
            fernet_key=[fernet, lab_fernet])),
        ("the Fernet key: the old one dropped", lambda s: s["airflow"].update(fernet_key=fernet)),
    ]
    back = yaml.safe_load(ORIGINAL)
    back["airflow"]["fernet_key"] = [lab_fernet, fernet]
    cases += [("everything back (Fernet [lab's, new])", lambda s: (s.clear(), s.update(back))),
              ("to the lab's secrets", lambda s: (s.clear(), s.update(yaml.safe_load(ORIGINAL))))]
    current = yaml.safe_load(ORIGINAL)
    try:
        for title, change in cases:
            current = rotate(title, change, current)
    finally:
        LAB_SECRETS.write_text(ORIGINAL)
        LAB_CA.write_text(ORIGINAL_CA)


if __name__ == "__main__":
    main()
