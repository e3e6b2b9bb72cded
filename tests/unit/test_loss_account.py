"""The account the lab's failover tests keep of a writer's acknowledged
writes (tests/lab/writers.py): which losses a crash or the operator's
consent explains, and which none does."""

from tests.lab.writers import unaccounted_losses

A, B = "10.11.12.10", "10.11.12.20"


def writes(*entries):
    """[number, server, time] for each (server, time), numbered from 1."""
    return [[number, server, at] for number, (server, at) in enumerate(entries, 1)]


# Server A answers until it crashes after 10.5, B takes over at 20 until the end.
ACKNOWLEDGED = writes((A, 6.0), (A, 7.0), (A, 8.0), (A, 9.5), (A, 10.5), (B, 20.0), (B, 21.0))


def test_the_last_writes_a_crashed_server_acknowledged_may_be_lost():
    on_primary = {1, 2, 3, 6, 7}  # 4 and 5: within the crash window before A's last answer
    assert unaccounted_losses({"postgresql": ACKNOWLEDGED}, {"postgresql": on_primary}) == \
        {"postgresql": []}


def test_a_write_lost_well_before_the_crash_is_unaccounted():
    on_primary = {1, 3, 4, 5, 6, 7}
    assert unaccounted_losses({"redis": ACKNOWLEDGED}, {"redis": on_primary}) == {"redis": [2]}


def test_a_write_lost_on_the_server_that_answered_until_the_end_is_unaccounted():
    on_primary = {1, 2, 3, 4, 5, 7}
    assert unaccounted_losses({"redis": ACKNOWLEDGED}, {"redis": on_primary}) == {"redis": [6]}


def test_writes_after_the_consented_moment_on_the_named_server_may_be_lost():
    on_primary = {1, 6, 7}
    acknowledged, stored = {"postgresql": ACKNOWLEDGED}, {"postgresql": on_primary}
    assert unaccounted_losses(acknowledged, stored, {"postgresql": (A, 4.0)}) == \
        {"postgresql": []}
    assert unaccounted_losses(acknowledged, stored, {"postgresql": (B, 4.0)}) == \
        {"postgresql": [2, 3]}


def test_a_pause_in_answers_ends_a_run_like_a_crash():
    acknowledged = writes((A, 1.0), (A, 2.0), (A, 9.0), (A, 10.0))  # A restarted at 2-9
    assert unaccounted_losses({"redis": acknowledged}, {"redis": {1, 3, 4}}) == {"redis": []}
    assert unaccounted_losses({"redis": acknowledged}, {"redis": {2, 3, 4}}) == {"redis": []}
    assert unaccounted_losses({"redis": acknowledged}, {"redis": {1, 2, 4}}) == {"redis": [3]}
