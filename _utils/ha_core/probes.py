"""
Waiting for a condition, and reading Airflow's health, as the runbook steps
do it: poll, and after a deadline say what was not reached.
"""

import json
import ssl
import time
import urllib.request

from ha_core.errors import OperationFailed
from ha_core.failover import airflow_health_problems

# A wait polls soon (most of what a step waits for holds within a second),
# then less and less often, down to once a second, so that a long wait does
# not flood the nodes with checks.
FIRST_POLL_SECONDS = 0.1
POLL_SECONDS = 1


def airflow_health(url):
    """
    Airflow's /health JSON at url, or {"error": why}. A load balancer's
    certificate is not verified: the check sends nothing and only reads
    whether Airflow is healthy, and the master may reach the balancer by an
    address the certificate does not name.
    """
    context = ssl._create_unverified_context()  # pylint: disable=protected-access
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return json.loads(response.read())
    except (OSError, ValueError) as error:
        return {"error": str(error)}


def firing_alerts(prometheus_url):
    """
    The alerts Prometheus at ``prometheus_url`` has firing, each
    ``{alertname, severity, instance, summary}``, or ``{"error": why}``.
    """
    try:
        with urllib.request.urlopen(f"{prometheus_url}/api/v1/alerts", timeout=5) as response:
            alerts = json.loads(response.read())["data"]["alerts"]
    except (OSError, ValueError, KeyError) as error:
        return {"error": str(error)}
    return [{"alertname": alert["labels"].get("alertname"),
             "severity": alert["labels"].get("severity"),
             "instance": alert["labels"].get("instance"),
             "summary": alert.get("annotations", {}).get("summary")}
            for alert in alerts if alert.get("state") == "firing"]


def poll_pauses():
    """The pauses between a wait's checks: FIRST_POLL_SECONDS, doubling up
    to POLL_SECONDS."""
    pause = FIRST_POLL_SECONDS
    while True:
        yield pause
        pause = min(pause * 2, POLL_SECONDS)


def wait_until(check, seconds, what):
    """Poll check() until it returns a true value, and return that;
    OperationFailed after ``seconds``."""
    deadline = time.monotonic() + seconds
    for pause in poll_pauses():
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise OperationFailed(f"{what} not reached within {seconds} s")
        time.sleep(pause)


def wait_without_problems(problems_of, seconds, what):
    """Poll problems_of() until it returns no problem; OperationFailed naming
    the last ones after ``seconds``."""
    deadline = time.monotonic() + seconds
    for pause in poll_pauses():
        problems = problems_of()
        if not problems:
            return
        if time.monotonic() > deadline:
            raise OperationFailed(f"{what} not reached within {seconds} s: " + "; ".join(problems))
        time.sleep(pause)


def wait_healthy(url, seconds, what):
    """Wait until Airflow's /health at url reports no problem."""
    wait_without_problems(lambda: airflow_health_problems(airflow_health(url)), seconds,
                          f"{what} ({url})")
