"""ha_core.pg_commands: the command lines of PostgreSQL's programs and the
SQL sent to it."""

from ha_core import pg_commands


def test_psql_reads_its_sql_on_standard_input_never_on_its_command_line():
    args = pg_commands.psql_args("/usr/lib/postgresql/15/bin/psql", "host=/run port=5432")
    assert args == ["/usr/lib/postgresql/15/bin/psql", "-X", "-A", "-t", "-q", "-w",
                    "-v", "ON_ERROR_STOP=1", "-d", "host=/run port=5432"]
    assert "-c" not in args and "-f" not in args


def test_pg_ctl_and_pg_rewind_read_a_configuration_kept_outside_the_data_directory():
    assert pg_commands.pg_ctl_start_args("pg_ctl", "/d", "/d.log", seconds=30) == [
        "pg_ctl", "start", "-w", "-t", "30", "-D", "/d", "-l", "/d.log"]
    assert pg_commands.pg_ctl_start_args("pg_ctl", "/d", "/d.log", "/etc/it's")[-2:] == [
        "-o", "-c config_file='/etc/it'\"'\"'s/postgresql.conf'"]
    assert pg_commands.pg_rewind_args("pg_rewind", "/d", "host=a") == [
        "pg_rewind", "--target-pgdata", "/d", "--source-server", "host=a"]
    assert pg_commands.pg_rewind_args("pg_rewind", "/d", "host=a", "/etc/pg")[-2:] == [
        "--config-file", "/etc/pg/postgresql.conf"]


def test_sql_quotes_literals_and_identifiers():
    assert pg_commands.quote_literal("it's") == "'it''s'"
    assert pg_commands.quote_ident('a "b"') == '"a ""b"""'
    assert pg_commands.create_slot_sql("pg_b") == (
        "select pg_create_physical_replication_slot('pg_b', true) where not exists "
        "(select from pg_replication_slots where slot_name = 'pg_b')")
    assert pg_commands.replication_state_sql("o'neil").endswith("application_name = 'o''neil'")
