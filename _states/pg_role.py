"""
Manage PostgreSQL login roles without exposing their passwords.

Unlike Salt's ``postgres_user`` state, the SQL (and with it the password)
reaches ``psql`` on its standard input, never on a command line that ``ps``
would show, and the change output only says that a password changed.
Connects to the local server over its Unix socket as the PostgreSQL OS user,
found through the ``pg_replication`` settings (see ``_modules/pg_replication.py``).

.. code-block:: yaml

    replicator:
      pg_role.present:
        - password: {{ pillar.postgresql.replication_password | json }}
        - replication: true
        - member_of: [pg_monitor]
        - rewind_source: true
"""

import base64
import hashlib
import hmac
import json

from salt.exceptions import CommandExecutionError

# What pg_rewind calls on its source server; granting them lets a
# non-superuser replication role be that source.
REWIND_FUNCTIONS = (
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
)

SETTINGS_DEFAULTS = {
    "bin_dir": "/usr/lib/postgresql/15/bin",
    "port": 5432,
    "socket_dir": "/var/run/postgresql",
    "os_user": "postgres",
}


def scram_password_matches(verifier, password):
    """True when ``verifier`` (pg_authid.rolpassword) is the SCRAM-SHA-256
    verifier of ``password``; False for any other or missing verifier."""
    try:
        method, rest = verifier.split("$", 1)
        iterations_salt, keys = rest.split("$", 1)
        iterations, salt = iterations_salt.split(":", 1)
        stored_key, server_key = keys.split(":", 1)
    except (AttributeError, ValueError):
        return False
    if method != "SCRAM-SHA-256":
        return False
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    expected_stored = hashlib.sha256(client_key).digest()
    expected_server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hmac.compare_digest(
        expected_stored, base64.b64decode(stored_key)
    ) and hmac.compare_digest(expected_server, base64.b64decode(server_key))


def _quote_ident(name):
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value):
    return "'" + value.replace("'", "''") + "'"


def _psql(sql):
    settings = dict(SETTINGS_DEFAULTS, **__salt__["config.get"]("pg_replication", {}))
    result = __salt__["cmd.run_all"](
        [
            f"{settings['bin_dir']}/psql", "-X", "-A", "-t", "-q",
            "-v", "ON_ERROR_STOP=1",
            "-h", settings["socket_dir"], "-p", str(settings["port"]), "-d", "postgres",
        ],
        stdin=sql,
        runas=settings["os_user"],
        python_shell=False,
        output_loglevel="quiet",
        ignore_retcode=True,
    )
    if result["retcode"] != 0:
        # psql's error names the statement's problem, never its parameters.
        raise CommandExecutionError(f"psql failed: {result['stderr'].strip()}")
    return result["stdout"].strip()


def _current(name, rewind_source):
    grants = ", ".join(
        f"'{fn}', has_function_privilege(r.oid, '{fn}', 'execute')"
        for fn in REWIND_FUNCTIONS
    ) if rewind_source else ""
    row = _psql(
        "select json_build_object("
        "'replication', r.rolreplication, 'login', r.rolcanlogin,"
        " 'verifier', r.rolpassword,"
        " 'member_of', (select coalesce(json_agg(g.rolname), '[]') from pg_auth_members m"
        "  join pg_roles g on g.oid = m.roleid where m.member = r.oid),"
        f" 'rewind_grants', json_build_object({grants}))"
        f" from pg_authid r where r.rolname = {_quote_literal(name)};"
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

    statements, changes = [], {}
    role = _quote_ident(name)
    attributes = f"LOGIN {'REPLICATION' if replication else 'NOREPLICATION'}"
    if current is None:
        statements.append(f"CREATE ROLE {role} {attributes} PASSWORD {_quote_literal(password)};")
        changes["role"] = "created"
    else:
        if current["replication"] != replication or not current["login"]:
            statements.append(f"ALTER ROLE {role} {attributes};")
            changes["replication"] = replication
        if not scram_password_matches(current["verifier"], password):
            statements.append(f"ALTER ROLE {role} PASSWORD {_quote_literal(password)};")
            changes["password"] = "changed"
    missing_groups = sorted(set(member_of) - set(current["member_of"] if current else []))
    for group in missing_groups:
        statements.append(f"GRANT {_quote_ident(group)} TO {role};")
    if missing_groups:
        changes["member_of"] = missing_groups
    if rewind_source and (current is None or not all(current["rewind_grants"].values())):
        statements += [f"GRANT EXECUTE ON FUNCTION {fn} TO {role};" for fn in REWIND_FUNCTIONS]
        changes["rewind_grants"] = "granted"

    if not statements:
        ret["comment"] = f"PostgreSQL role {name} is as configured"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"PostgreSQL role {name} would change: {', '.join(changes)}"
        ret["changes"] = changes
        return ret
    try:
        _psql("BEGIN;\n" + "\n".join(statements) + "\nCOMMIT;")
    except CommandExecutionError as error:
        ret["result"] = False
        ret["comment"] = str(error)
        return ret
    ret["changes"] = changes
    ret["comment"] = f"PostgreSQL role {name} changed: {', '.join(changes)}"
    return ret
