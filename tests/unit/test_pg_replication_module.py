"""_modules/pg_replication.py, loaded as a Python module: what it says when
it cannot load."""

from _modules import pg_replication as pgr


def test_the_module_does_not_load_without_the_server_programs(monkeypatch, tmp_path):
    settings = {"bin_dir": str(tmp_path)}  # no PostgreSQL programs there
    monkeypatch.setattr(pgr, "__salt__", {"config.get": lambda key, default: settings},
                        raising=False)
    monkeypatch.setattr(pgr, "__grains__", {"id": "pg-a"}, raising=False)
    loaded, reason = pgr.__virtual__()
    assert loaded is False
    assert reason == (f"pg_replication: pg_controldata not found in {tmp_path}; install the "
                      "PostgreSQL server package or set pg_replication:bin_dir")


def test_a_standby_restoring_its_segment_from_the_archive_has_no_local_last_record(tmp_path):
    """Its startup process names a segment of the new timeline that pg_wal
    does not hold yet: the status reads no last record there (and runs no
    pg_waldump) instead of failing."""
    (tmp_path / "pg_wal").mkdir()
    (tmp_path / "pg_wal" / "000000050000000000000023").touch()
    (tmp_path / "pg_wal" / "00000006.history").touch()
    settings = {"data_dir": str(tmp_path)}  # no bin_dir: running pg_waldump would fail
    segment_size = 16 * 1024 * 1024
    assert pgr._last_local_record(settings, segment_size, 6, 0x23 * segment_size) is None
