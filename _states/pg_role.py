"""
Manage PostgreSQL login roles without exposing their passwords.

Unlike Salt's ``postgres_user`` state, the SQL (and with it the password)
reaches ``psql`` on its standard input, never on a command line that ``ps``
would show, and the change output only says that a password changed.
Connects to the local server over its Unix socket as the PostgreSQL OS user,
through ``pg_replication.local_sql`` (see ``_modules/pg_replication.py`` for
its settings).

.. code-block:: yaml

    replicator:
      pg_role.present:
        - password: {{ pillar.postgresql.replication_password | json }}
        - replication: true
        - member_of: [pg_monitor]
        - rewind_source: true
"""

import json

from salt.exceptions import CommandExecutionError

from ha_core import pg_commands, pg_decisions, pg_facts


def _current(name, rewind_source):
    """The role as pg_decisions.role_changes takes it, or None when it does not exist."""
    grants = ", ".join(
        f"'{function}', has_function_privilege(r.oid, '{function}', 'execute')"
        for function in pg_facts.REWIND_FUNCTIONS
    ) if rewind_source else ""
    row = __salt__["pg_replication.local_sql"](
        "select json_build_object("
        "'replication', r.rolreplication, 'login', r.rolcanlogin,"
        " 'verifier', r.rolpassword,"
        " 'member_of', (select coalesce(json_agg(g.rolname), '[]') from pg_auth_members m"
        "  join pg_roles g on g.oid = m.roleid where m.member = r.oid),"
        f" 'rewind_grants', json_build_object({grants}))"
        f" from pg_authid r where r.rolname = {pg_commands.quote_literal(name)};"
    )
    return json.loads(row) if row else None


def present(name, password, replication=False, member_of=(), rewind_source=False):
    """
    Ensure the login role ``name`` exists with ``password`` (stored as a
    SCRAM-SHA-256 verifier), the REPLICATION attribute as given, membership
    of the roles in ``member_of``, and, with ``rewind_source``, the function
    grants pg_rewind needs on its source server.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    if not password:
        ret["result"] = False
        ret["comment"] = (
            f"no password given for PostgreSQL role {name}; set it in the pillar"
        )
        return ret
    try:
        current = _current(name, rewind_source)
    except CommandExecutionError as error:
        ret["result"] = False
        ret["comment"] = str(error)
        return ret

    statements, changes = pg_decisions.role_changes(
        current, name, password, replication, member_of, rewind_source
    )
    if not statements:
        ret["comment"] = f"PostgreSQL role {name} is as configured"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"PostgreSQL role {name} would change: {', '.join(changes)}"
        ret["changes"] = changes
        return ret
    try:
        # psql's error names the statement's problem, never its parameters.
        __salt__["pg_replication.local_sql"]("BEGIN;\n" + "\n".join(statements) + "\nCOMMIT;")
    except CommandExecutionError as error:
        ret["result"] = False
        ret["comment"] = str(error)
        return ret
    ret["changes"] = changes
    ret["comment"] = f"PostgreSQL role {name} changed: {', '.join(changes)}"
    return ret
