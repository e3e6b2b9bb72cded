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
