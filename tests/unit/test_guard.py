"""ha_core.guard: what a start guard decides, and how it fails."""

import yaml

from ha_core import guard
from tests.conftest import REPO


def test_a_node_starting_as_a_standby_starts_as_it_is():
    assert guard.postgresql_action(True, ["10.11.12.20:5432"]) == ("start", None)


def test_a_would_be_primary_with_no_writable_peer_starts_as_it_is():
    assert guard.postgresql_action(False, []) == ("start", None)


def test_a_would_be_primary_beside_a_writable_peer_is_fenced_saying_why():
    action, reason = guard.postgresql_action(False, ["10.11.12.20:5432"])
    assert action == "fence"
    assert "10.11.12.20:5432 is already a writable primary" in reason
    assert "orch.failback" in reason


def test_a_redis_replica_starts_as_it_is():
    assert guard.redis_action(("replica", ("10.11.12.20", 6379)), ["10.11.12.20:6379"]) == (
        "start", None)


def test_a_redis_master_beside_a_master_peer_follows_it():
    assert guard.redis_action(("master", None), ["10.11.12.20:6379"]) == (
        "follow", "10.11.12.20:6379")
    assert guard.redis_action(("master", None), []) == ("start", None)


def test_unknown_or_incomplete_arguments_print_the_usage_and_fail(capsys):
    assert guard.main([]) == 2
    assert guard.main(["mysql", "a", "b", "c", "d"]) == 2
    assert guard.main(["redis", "/etc/redis/replication.conf"]) == 2
    assert "usage: airflow-ha-start-guard postgresql" in capsys.readouterr().err


def test_a_guard_that_cannot_read_its_files_fails_closed(tmp_path, capsys):
    missing = tmp_path / "replication.conf"
    assert guard.main(["redis", str(missing), str(tmp_path / "redis.conf"), "redis-cli"]) == 1
    assert "not starting" in capsys.readouterr().err


def test_the_installed_paths_are_the_states():
    defaults = yaml.safe_load((REPO / "salt" / "start_guard" / "defaults.yaml").read_text())
    assert defaults["start_guard"] == {"program": guard.INSTALLED_PROGRAM,
                                       "core_dir": guard.INSTALLED_CORE}
