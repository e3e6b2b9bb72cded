"""
How PostgreSQL is asked: the command lines of its programs and the SQL
the execution module and the start guards send. SQL always goes on psql's
standard input (``psql_args``), never on a command line that ``ps`` shows.
"""

import os
import shlex


def psql_args(psql, conninfo):
    """
    Return the psql command line for ``conninfo``: unaligned tuples only, no
    prompt for a password, stop at the first error. The SQL goes on psql's
    standard input, so that no statement (and no password in one) shows in
    ``ps``.
    """
    return [psql, "-X", "-A", "-t", "-q", "-w", "-v", "ON_ERROR_STOP=1", "-d", conninfo]


def pg_ctl_start_args(pg_ctl, data_dir, log_file, conf_dir=None, seconds=60):
    """
    Return the pg_ctl command line that starts the server of ``data_dir``,
    logging to ``log_file``, with its postgresql.conf in ``conf_dir`` when it
    is not in the data directory, and waits ``seconds`` for it to accept
    connections.
    """
    args = [pg_ctl, "start", "-w", "-t", str(seconds), "-D", data_dir, "-l", log_file]
    if conf_dir:
        config_file = os.path.join(conf_dir, "postgresql.conf")
        # pg_ctl hands -o to a shell
        args += ["-o", f"-c config_file={shlex.quote(config_file)}"]
    return args


def pg_rewind_args(pg_rewind, data_dir, source_conninfo, conf_dir=None):
    """
    Return the pg_rewind command line that rewinds ``data_dir`` to the server
    of ``source_conninfo``.
    """
    args = [pg_rewind, "--target-pgdata", data_dir, "--source-server", source_conninfo]
    if conf_dir:
        # pg_rewind runs the server in single-user mode when it must finish
        # crash recovery first
        args += ["--config-file", os.path.join(conf_dir, "postgresql.conf")]
    return args


def quote_literal(value):
    """Return ``value`` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def quote_ident(name):
    """Return ``name`` as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def create_slot_sql(slot):
    """
    Return the SQL that creates the physical replication slot ``slot`` unless
    it exists. It reserves WAL from the primary's last checkpoint, which a
    rewound or freshly copied standby starts from.
    """
    name = quote_literal(slot)
    return (f"select pg_create_physical_replication_slot({name}, true) where not exists "
            f"(select from pg_replication_slots where slot_name = {name})")


def replication_state_sql(application_name):
    """
    Return the SQL that a primary answers with the state of its standby
    ``application_name`` in pg_stat_replication (``streaming`` once it streams).
    """
    return ("select state from pg_stat_replication where application_name = "
            + quote_literal(application_name))


# One row of JSON: the primary's WAL position and what it streams to.
PRIMARY_STATUS_SQL = """
select json_build_object(
  'current_lsn', pg_current_wal_lsn(),
  'current_wal_file', pg_walfile_name(pg_current_wal_lsn()),
  'standbys', coalesce((
    select json_agg(json_build_object(
      'application_name', application_name,
      'client_addr', host(client_addr),
      'state', state,
      'sent_lsn', sent_lsn,
      'write_lsn', write_lsn,
      'flush_lsn', flush_lsn,
      'replay_lsn', replay_lsn,
      'lag_bytes', pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
      'lag_seconds', extract(epoch from replay_lag)::float8,
      'sync_state', sync_state) order by application_name)
    from pg_stat_replication), '[]'),
  'slots', coalesce((
    select json_agg(json_build_object(
      'slot_name', slot_name,
      'active', active,
      'restart_lsn', restart_lsn) order by slot_name)
    from pg_replication_slots where slot_type = 'physical'), '[]'))
"""
