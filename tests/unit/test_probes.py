"""ha_core.probes: how a runbook step waits for a condition."""

import itertools

import pytest

from ha_core import probes
from ha_core.errors import OperationFailed


def test_a_wait_polls_soon_then_once_a_second():
    assert list(itertools.islice(probes.poll_pauses(), 7)) == [0.1, 0.2, 0.4, 0.8, 1, 1, 1]


def test_a_wait_returns_what_the_check_found_once_it_holds():
    answers = iter([None, {}, {"received_lsn": "0/6000028"}])

    assert probes.wait_until(lambda: next(answers), 10, "caught up") == {
        "received_lsn": "0/6000028"}


def test_a_wait_that_runs_out_names_what_was_not_reached():
    with pytest.raises(OperationFailed, match="the standby caught up not reached within 0 s"):
        probes.wait_until(lambda: None, 0, "the standby caught up")


def test_a_wait_for_no_problems_names_the_last_ones():
    with pytest.raises(OperationFailed, match="Airflow healthy not reached within 0 s: "
                                              "scheduler is unhealthy"):
        probes.wait_without_problems(lambda: ["scheduler is unhealthy"], 0, "Airflow healthy")
