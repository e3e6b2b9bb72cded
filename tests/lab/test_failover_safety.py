"""Failover safety under faults, on the lab: one test per scenario of the
failover safety issue. Start guards fail closed (a node cut off from its
peer starts fenced; a rebooted primary beside its warm standby comes back
without help); both servers down after a forced failover, booted in either
order; fence before promote; runs broken or killed half-way are finished by
running them again. Throughout each, a client writes to PostgreSQL and
Redis and both servers are polled: never two writable PostgreSQL
primaries, never two Redis masters; afterwards every acknowledged write is
on the final primary, or lost only where a crash or the operator's consent
explains it (tests/lab/writers.py).

Each scenario starts from whichever server is the primary and ends with the
pair redundant, by the shortest path: a forced failover ends with the
former primary rejoined as the standby (orch.failback switch_back=false),
not with a switch back. The module switches back to the preferred primary
once, at its end, for the modules after it."""

import json
import re
import time
from pathlib import Path

import pytest

from tests.conftest import bin_lab, highstate, salt_json
from tests.lab.airflow_api import wait_until
from tests.lab.test_failover import failback_with_consent, run_state, trigger_sleeping_run
from tests.lab.writers import (SERVER1, SERVER2, WORKER, assert_loss_accounted,
                               assert_nothing_lost, orchestrate, psql, redis_cli, redis_master,
                               salt_run, salt_run_json, watched, writable)

pytestmark = [pytest.mark.lab, pytest.mark.destructive]


@pytest.fixture(scope="module", autouse=True)
def preferred_primary_at_the_end(lab, say_module):
    yield
    if record()["primary"] != SERVER1:
        returncode, output = orchestrate(say_module, "orch.failback")
        assert returncode == 0, output


def pair():
    """(primary, standby): the servers as the topology record has them."""
    primary = record()["primary"]
    return primary, (SERVER2 if primary == SERVER1 else SERVER1)


def rejoin(say):
    """The former primary rejoins as the standby (consenting to the WAL
    it would discard); the roles stay."""
    failback_with_consent(say, switch_back=False)


def pg_status(node):
    return salt_json(node, "pg_replication.status")[node]


def assert_the_writer(primary):
    assert writable(primary) and redis_master(primary)
    other = SERVER2 if primary == SERVER1 else SERVER1
    assert not writable(other) and not redis_master(other)


def fail_over_then_lose_both(say, primary, standby):
    """The primary crashes, a forced failover promotes the standby, then
    that one crashes too: both down, the stale one's record older."""
    bin_lab("crash", primary)
    returncode, output = orchestrate(say, "orch.failover", 'pillar={"force": true}')
    assert returncode == 0, output
    bin_lab("crash", standby)


def restart(node, unit):
    return bin_lab("exec", node, "--", "systemctl", "restart", unit, check=False)


def problems():
    """What airflow_ha.status finds wrong with the cluster."""
    return salt_run_json("airflow_ha.status")["problems"]


def wait_whole(what):
    wait_until(lambda: problems() == [], 180, f"no problem in airflow_ha.status ({what})")


def record():
    """The topology record; before any failover, the preferred primary's."""
    topology = salt_run_json("airflow_ha.topology")
    return topology["record"] or {"primary": topology["preferred"], "fenced": []}


def redis_master_link_broken(node):
    """Redis on node keeps its role file but loses its link to its master
    (a wrong masterauth); restart its redis-server to repair it."""
    redis_cli(node, "CONFIG", "SET", "masterauth", "not-the-password")
    redis_cli(node, "CLIENT", "KILL", "TYPE", "master")


# -- Start guards: a node decides alone whether it may take writes ------------------


def test_a_rebooted_primary_beside_its_warm_standby_comes_back_as_primary(lab, say):
    """Scenario 2: the standby answers no SQL (warm), but its peer report
    says it runs in recovery with the same record: positive evidence, no
    operator."""
    primary, _ = pair()
    with watched(lab, say, primary) as writer:
        bin_lab("crash", primary)
        bin_lab("start", primary)
        wait_until(lambda: writable(primary), 120, f"{primary} writable again")
        wait_until(lambda: redis_master(primary), 60, f"Redis on {primary} master again")
        time.sleep(2)  # writes flow again
    assert not pg_status(primary)["fenced"]
    assert_the_writer(primary)
    assert_loss_accounted(say, writer, writer.acknowledged, primary)


def test_a_primary_cut_off_from_its_peer_restarts_fenced_until_unfenced(lab, say):
    """Scenario 2: a primary that cannot reach its peer when it starts
    starts fenced and says so, until the operator runs unfence."""
    primary, standby = pair()
    with watched(lab, say, primary) as writer:
        bin_lab("isolate", primary, "--from", standby)
        try:
            restart(primary, "postgresql@15-main")
            restart(primary, "redis-server")
            state = pg_status(primary)
            assert state["role"] == "standby" and state["fenced"], state
            assert state["fence"]["reason"].startswith("start guard:")
            assert f"{standby} does not report" in state["fence"]["reason"]
            assert not writable(primary) and not redis_master(primary)
            journal = bin_lab("exec", primary, "--", "journalctl", "-u", "postgresql@15-main",
                              "-n", "30", "--no-pager").stdout
            assert "salt-run airflow_ha.unfence" in journal
            returncode, status = salt_run("airflow_ha.status")
            assert "fenced by its start guard" in status and "airflow_ha.unfence" in status
        finally:
            bin_lab("heal", primary)
        returncode, output = salt_run("airflow_ha.unfence")
        say(output.strip().splitlines()[-1])
        assert returncode == 0, output
        wait_until(lambda: writable(primary), 60, f"{primary} writable after unfence")
        time.sleep(2)
    assert_the_writer(primary)
    assert_nothing_lost(writer, writer.acknowledged, primary)  # clean restarts: nothing lost
    wait_whole(f"{standby} streaming again")


def test_both_servers_down_after_a_forced_failover_stale_one_first(lab, say):
    """Scenario 3: the stale former primary boots first: its peer is down,
    so it starts fenced. The newer primary boots next: its peer reports
    recovery and an older record, so it starts as the primary, without
    help."""
    stale, newer = pair()
    with watched(lab, say, stale) as writer:
        fail_over_then_lose_both(say, stale, newer)
        bin_lab("start", stale)
        state = pg_status(stale)
        assert state["fenced"] and state["role"] == "standby", state
        assert not writable(stale) and not redis_master(stale)
        bin_lab("start", newer)
        wait_until(lambda: writable(newer), 120, f"{newer} writable")
        wait_until(lambda: redis_master(newer), 60, f"Redis on {newer} master")
        assert not writable(stale)
        rejoin(say)
        time.sleep(2)
    assert_the_writer(newer)
    assert_loss_accounted(say, writer, writer.acknowledged, newer)


def test_both_servers_down_newer_one_first_waits_for_unfence(lab, say):
    """Scenario 3: the newer primary boots first with its peer down: it
    cannot prove it is the writer and starts fenced; the stale one follows
    and finds a newer record. Nobody writes until the operator runs
    unfence, which picks the writer by generation, not by boot order."""
    stale, newer = pair()
    with watched(lab, say, stale) as writer:
        fail_over_then_lose_both(say, stale, newer)
        bin_lab("start", newer)
        bin_lab("start", stale)
        for node in (stale, newer):
            state = pg_status(node)
            assert state["fenced"] and state["role"] == "standby", (node, state)
        assert not writable(stale) and not writable(newer)
        returncode, output = salt_run("airflow_ha.unfence", stale)
        assert returncode != 0 and f"{stale} is not the writer" in output, output
        returncode, output = salt_run("airflow_ha.unfence")
        assert returncode == 0, output
        wait_until(lambda: writable(newer), 60, f"{newer} writable after unfence")
        rejoin(say)
        time.sleep(2)
    assert_the_writer(newer)
    assert record()["primary"] == newer
    assert_loss_accounted(say, writer, writer.acknowledged, newer)


# -- Runs under faults: fence before promote, runs finished, the record ---------------


def test_a_forced_failover_of_a_live_primary_fences_it_before_promoting(lab, say):
    """Scenario 1: the primary's minion is stopped, PostgreSQL and Redis run
    and stream. The operator's word that it is fenced is refused (the
    standby still streams from it); the fence agent powers it off, its
    ports are checked closed, and only then is the standby promoted."""
    primary, standby = pair()
    bin_lab("exec", primary, "--", "systemctl", "stop", "salt-minion")
    with watched(lab, say, primary) as writer:
        returncode, output = orchestrate(
            say, "orch.failover", f'pillar={{"force": true, "fenced": "{primary}"}}')
        assert returncode != 0 and f"{primary} was named fenced, but it runs" in output, output
        assert f"WAL receiver on {standby} is streaming from it" in output
        assert writable(primary) and not writable(standby)

        returncode, output = orchestrate(say, "orch.failover", 'pillar={"force": true}')
        assert returncode == 0, output
        assert re.search(rf"fenced by the fence agent \S+/bin/lab, verified ports 5432, 6379 "
                         rf"of {lab[primary]} closed, seen from {standby}", output), output
        # The order: fenced first, then promoted.
        assert output.index(f"==> fence {primary}") < output.index("==> promote PostgreSQL")
        assert_the_writer(standby)
        assert record()["fenced"] == [primary]
        assert problems() == []  # powered off, and known fenced: no problem
        bin_lab("start", primary)
        assert pg_status(primary)["fenced"] and not writable(primary)
        rejoin(say)
        time.sleep(2)
    assert_the_writer(standby)
    assert_loss_accounted(say, writer, writer.acknowledged, standby)


# The steps of a planned switch, by the first words of their progress lines.
PLANNED_STEPS = ("==> shut down", "==> check that", "==> promote", "==> make Redis",
                 "==> record", "==> start the Airflow schedulers", "==> rejoin")


def test_a_planned_switch_killed_before_each_step_is_finished_by_the_next_run(lab, say):
    """Every row of the README's "When a step fails": a run of orch.failover
    is killed as each step begins (as a lost master would stop it), and the
    next run of the same runbook takes over from there (resume, then
    finish) until the switch is whole. The switch back, killed after
    recording, is finished the same way. Nothing is lost, never two writers."""
    primary, standby = pair()
    with watched(lab, say, primary) as writer:
        for step in PLANNED_STEPS:
            returncode, output = orchestrate(say, "orch.failover", stop_at=step)
            assert returncode != 0 and "REFUSED" not in output, output
        returncode, output = orchestrate(say, "orch.failover")
        assert returncode == 0, output
        assert "plan: finish the orch.failover that recorded" in output, output
        assert record()["primary"] == standby and problems() == []
        # Back to the preferred primary by failback; from the other, by failover.
        back = "orch.failback" if primary == SERVER1 else "orch.failover"
        returncode, output = orchestrate(say, back, stop_at="==> start the Airflow schedulers")
        assert returncode != 0, output
        returncode, output = orchestrate(say, back)
        assert returncode == 0, output
        assert "start the Airflow schedulers again" in output, output
        time.sleep(2)
    assert_the_writer(primary)
    assert problems() == []
    assert_nothing_lost(writer, writer.acknowledged, primary)


def test_a_planned_switch_broken_half_way_is_finished_by_running_it_again(lab, say):
    """Scenario 5: the Redis handover fails after PostgreSQL was promoted.
    The re-run finishes the switch; nothing is lost, never two writers."""
    primary, standby = pair()

    def break_the_redis_link(line):
        if line.startswith("==> check that"):
            redis_master_link_broken(standby)

    with watched(lab, say, primary) as writer:
        returncode, output = orchestrate(say, "orch.failover", on_line=break_the_redis_link)
        assert returncode != 0 and "what to do next" in output, output
        assert writable(standby) and redis_master(primary) and record()["primary"] == primary
        restart(standby, "redis-server")  # its link repaired
        wait_until(lambda: "master_link_status:up" in redis_cli(standby, "INFO", "replication"),
                   60, f"Redis on {standby} linked again")
        returncode, output = orchestrate(say, "orch.failover")
        assert returncode == 0, output
        assert "plan: resume switch" in output and "already" in output, output
        assert record()["primary"] == standby
        wait_whole("after the finished switch")
        time.sleep(2)
    assert_the_writer(standby)
    pg_acked, redis_acked = assert_nothing_lost(writer, writer.acknowledged, standby)
    say(f"{len(pg_acked)} rows and {len(redis_acked)} Redis items acknowledged, none lost")


def test_a_failback_discards_a_former_primarys_commits_only_with_consent(lab, say):
    """Scenario 4: the primary commits while cut off from its standby, then
    crashes; after the forced failover the failback shows the WAL the
    rejoin would discard, refuses without consent, and with it keeps a
    copy: the loss is exactly what was shown."""
    primary, standby = pair()
    with watched(lab, say, primary) as writer:
        cut_off = time.time()
        bin_lab("isolate", primary, "--from", standby)
        psql(primary, "create table scenario4 as select generate_series(1, 1000) as n")
        bin_lab("crash", primary)
        returncode, output = orchestrate(say, "orch.failover", 'pillar={"force": true}')
        assert returncode == 0, output
        bin_lab("start", primary)  # a restart undoes the cut; it starts fenced
        no_switch_back = 'pillar={"switch_back": false}'
        returncode, output = orchestrate(say, "orch.failback", no_switch_back)
        shown = re.search(r"would discard (\d+) bytes of its WAL, ([0-9A-F/]+-[0-9A-F/]+),", output)
        assert returncode != 0 and shown and int(shown.group(1)) > 0, output
        assert pg_status(primary)["fenced"] and writable(standby)  # nothing changed
        returncode, output = orchestrate(
            say, "orch.failback", f'pillar={{"discard": "{shown.group(2)}", "switch_back": false}}')
        assert returncode == 0, output
        assert f"discarded {shown.group(2)} ({shown.group(1)} bytes)" in output
        kept = re.search(r"kept in (/[^\s,]+)", output).group(1)
        assert bin_lab("exec", primary, "--", "test", "-d", kept, check=False).returncode == 0
        time.sleep(2)
    assert_the_writer(standby)
    assert psql(standby, "select to_regclass('scenario4')").stdout.strip() == ""
    # What the cut-off primary acknowledged was in the range discarded with consent.
    assert_loss_accounted(say, writer, writer.acknowledged, standby, consented={
        "postgresql": (lab[primary], cut_off), "redis": (lab[primary], cut_off)})


def test_status_counts_a_silent_database_node_not_known_fenced(lab, say):
    """Scenario 9: status and verify do not judge only from the minions that
    answer: a database node that does not answer is a problem."""
    primary, standby = pair()
    with watched(lab, say, primary) as writer:
        bin_lab("exec", standby, "--", "systemctl", "stop", "salt-minion")
        try:
            assert (f"{standby} does not answer and is not known fenced: it may still take "
                    "writes; check it, or power it off") in problems()
            returncode, output = salt_run("airflow_ha.verify", "wait=5")
            assert returncode != 0, output
            assert f"{standby} does not answer and is not known fenced" in output
        finally:
            bin_lab("exec", standby, "--", "systemctl", "start", "salt-minion")
        wait_whole(f"{standby}'s minion back")
    assert_the_writer(primary)
    assert_nothing_lost(writer, writer.acknowledged, primary)


def test_a_stopped_primary_whose_standby_lacks_its_last_commits_is_not_failed_over(lab, say):
    """Scenario 6: the standby stops receiving; a planned switch is refused
    up front; the primary is then shut down (as a run whose standby check
    failed leaves it) with commits the standby lacks. Re-running the
    failover, forced or not, refuses and names the command that brings the
    primary back; that command does, and nothing is lost."""
    primary, standby = pair()
    with watched(lab, say, primary) as writer:
        bin_lab("isolate", standby, "--from", primary)
        try:
            psql(primary, "select pg_terminate_backend(pid) from pg_stat_replication")
            wait_until(lambda: psql(primary, "select count(*) from pg_stat_replication"
                                    ).stdout.strip() == "0", 30, "no walsender left")
            returncode, output = orchestrate(say, "orch.failover")
            assert returncode != 0 and "refused before changing anything" in output, output
            psql(primary, "create table scenario6 as select 1 as n")
            salt_json(primary, "pg_replication.fence", "reason=test: a switch stopped here")
            for pillar in ([], ['pillar={"force": true}']):
                returncode, output = orchestrate(say, "orch.failover", *pillar)
                assert returncode != 0, output
                assert "has received only up to" in output, output
                assert f"salt-run airflow_ha.unfence {primary}" in output
                assert pg_status(standby)["role"] == "standby" and not writable(standby)
        finally:
            bin_lab("heal", standby)
        returncode, output = salt_run("airflow_ha.unfence", primary)
        assert returncode == 0, output
        wait_until(lambda: writable(primary), 60, f"{primary} writable again")
        time.sleep(2)
    assert_the_writer(primary)
    assert psql(primary, "select n from scenario6").stdout.strip() == "1"
    psql(primary, "drop table scenario6")
    assert_nothing_lost(writer, writer.acknowledged, primary)
    wait_whole(f"{standby} streaming again")


def test_a_forced_redis_promotion_is_bounded_and_a_crashed_primary_fenced_by_its_minion(lab,
                                                                                          say):
    """Scenario 10: PostgreSQL on the primary crashed, its Redis runs, and
    the replica's link broke a while ago: the writes it missed exceed
    failover:max_redis_lag_bytes, so even a forced failover refuses. Raised
    for one run, as the refusal says, the minion fences the old primary's
    PostgreSQL and Redis first, and exactly the shown loss happens."""
    primary, standby = pair()
    with watched(lab, say, primary) as writer:
        redis_master_link_broken(standby)
        # What the replica holds from here on: replication is asynchronous,
        # so under load it may lack writes acknowledged just before the break.
        replicated = redis_cli(standby, "LRANGE", writer.list_key, "-1", "-1").split()
        redis_cli(primary, "EVAL", "redis.call('set', 'scenario10', string.rep('x', 2000000))",
                  "0")
        bin_lab("exec", primary, "--", "pkill", "-KILL", "-f", "postgres: 15/main|bin/postgres")
        returncode, output = orchestrate(say, "orch.failover", 'pillar={"force": true}')
        assert returncode != 0 and "max_redis_lag_bytes" in output, output
        lag = int(re.search(r"is (\d+) bytes behind its master", output).group(1))
        assert lag > 2000000 and f'"max_redis_lag_bytes": {lag}' in output
        assert pg_status(standby)["role"] == "standby" and redis_master(primary)
        # Its Redis still takes writes (the writer's, Airflow's), so the gap grows: headroom.
        returncode, output = orchestrate(
            say, "orch.failover", f'pillar={{"force": true, "max_redis_lag_bytes": {lag + 2**22}}}')
        assert returncode == 0, output
        assert "fenced by its minion: PostgreSQL and Redis stopped and fenced" in output
        assert redis_cli(standby, "EXISTS", "scenario10").strip() == "0"  # the accepted loss
        assert_the_writer(standby)
        assert "master_link_status:up" in redis_cli(primary, "INFO", "replication")
        rejoin(say)
        time.sleep(2)
    assert_the_writer(standby)
    # The writes the replica lacked when its link broke were the loss the raised bound accepted.
    held = int((replicated or [0])[0])
    lacked_since = next(at for number, _, at in writer.acknowledged["redis"] if number > held)
    say(f"the Redis replica held the writer's items up to {held} when its link broke")
    assert_loss_accounted(say, writer, writer.acknowledged, standby,
                          consented={"redis": (lab[primary], lacked_since)})


def test_a_lost_master_record_stops_the_highstate_until_recorded_again(lab, say):
    """Scenario 7: the master's record is gone while the nodes hold copies
    of a later generation: the highstate refuses and names the fix, and no
    Airflow unit restarts."""
    primary, standby = pair()
    path = Path(salt_run_json("airflow_ha.topology")["path"])
    saved = path.read_text()
    since = bin_lab("exec", standby, "--", "systemctl", "show", "-P", "ActiveEnterTimestamp",
                    "airflow-scheduler").stdout
    with watched(lab, say, primary) as writer:
        path.unlink()
        try:
            results = highstate(standby)[standby]
            text = json.dumps(results)
            assert "the master's topology record is missing, older than the copy" in text
            assert "salt-run airflow_ha.record_primary" in text
        finally:
            returncode, output = salt_run("airflow_ha.record_primary", primary, "reason=restored")
        assert returncode == 0, output
    assert json.loads(path.read_text())["generation"] > json.loads(saved)["generation"]
    assert bin_lab("exec", standby, "--", "systemctl", "show", "-P", "ActiveEnterTimestamp",
                   "airflow-scheduler").stdout == since
    assert_the_writer(primary)
    assert_nothing_lost(writer, writer.acknowledged, primary)


def test_a_worker_down_during_a_failover_takes_work_when_it_returns(lab, say):
    """Scenario 8: the worker is off while the primaries move; the run says
    it was not reached. When it returns, nothing of its configuration has
    to change (its broker is the balancer's frontend, which leads to the
    new master already), and it runs the next DAG run. (The writer runs on
    the standby server here: the worker is the node that goes down.)"""
    primary, standby = pair()
    config = "/opt/airflow/airflow.cfg"
    configured = bin_lab("exec", WORKER, "--", "sha256sum", config).stdout
    with watched(lab, say, primary, writer_node=standby) as writer:
        bin_lab("crash", WORKER)
        try:
            returncode, output = orchestrate(say, "orch.failover")
        finally:
            bin_lab("start", WORKER)  # the later tests need it, whatever this one finds
        assert returncode == 0, output
        assert f"not reached (they start theirs when their minion returns) {WORKER}" in output
        wait_until(lambda: bin_lab("exec", WORKER, "--", "systemctl", "is-active",
                                   "airflow-worker", check=False).stdout.strip() == "active",
                   120, "its worker active")
        smoke = trigger_sleeping_run(0)
        assert wait_until(lambda: run_state(smoke), 300, "a DAG run after the worker returned") \
            == "success"
        assert bin_lab("exec", WORKER, "--", "sha256sum", config).stdout == configured
        time.sleep(2)
    assert_the_writer(standby)
    assert_nothing_lost(writer, writer.acknowledged, standby)
