"""Fixtures of the lab tests."""

import pytest

from tests.conftest import bin_lab
from tests.lab.airflow_api import health, healthy, wait_until


@pytest.fixture(scope="module")
def airflow_healthy(lab):
    """Airflow healthy through HAProxy, as a test module starts from."""
    return wait_until(lambda: healthy(health()), 300, "Airflow healthy through HAProxy")


def broken_nodes():
    """{node: (state, what bin/lab status says of its minion and cuts)} for
    every node that is down, cut off, or whose minion does not answer."""
    broken = {}
    for line in bin_lab("status").stdout.splitlines()[1:]:
        name, _address, state, rest = line.split(None, 3)
        if state == "down" or "not answering" in rest or "isolated from" in rest:
            broken[name] = (state, rest)
    return broken


def mend_the_lab(say, after):
    """Boot every node that is down, heal every cut, start every stopped
    minion, saying what was broken ``after`` what; then wait until every
    minion answers."""
    broken = broken_nodes()
    for name, (state, rest) in broken.items():
        say(f"-- after {after}: {name} was {state}, {rest.strip()}: mending it")
        if state == "down":
            bin_lab("start", name)
            continue
        if "isolated from" in rest:
            bin_lab("heal", name)
        bin_lab("exec", name, "--", "systemctl", "start", "salt-minion")
    if broken:
        wait_until(lambda: not broken_nodes(), 120, "every node up with its minion answering")


@pytest.fixture(autouse=True)
def every_node_back_after_a_destructive_test(request, say):
    """A destructive test that fails half-way can leave a server powered
    off, cut off, or with its minion stopped, and every later test would
    fail on that instead of on its own behaviour: mend the lab after each
    one. (After a test that passed, every node is up: then this only looks.)"""
    yield
    if request.node.get_closest_marker("destructive"):
        mend_the_lab(say, request.node.name)
