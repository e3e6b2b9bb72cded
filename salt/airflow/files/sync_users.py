"""Keep Airflow's roles and users in step with the pillar.

Reads {username: {password, roles, first_name, last_name, email}} as JSON on
standard input (so that no command line holds a password), makes sure the
default roles exist, creates missing users and corrects the roles, names,
e-mail and password of existing ones. Users not in the input are left alone.
The last line of output is for Salt's stateful cmd.run: changed=yes|no and a
comment that never holds a password.
"""

import json
import sys

from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
from werkzeug.security import check_password_hash

DEFAULT_ROLES = {"Admin", "Viewer", "User", "Op", "Public"}


def sync(security_manager, wanted):
    """Apply `wanted` through the FAB security manager; return what changed."""
    changes = []
    if not DEFAULT_ROLES <= {role.name for role in security_manager.get_all_roles()}:
        security_manager.sync_roles()
        changes.append("default roles created")
    for username, user in sorted(wanted.items()):
        roles = [security_manager.find_role(name) for name in user["roles"]]
        unknown = [name for name, role in zip(user["roles"], roles) if role is None]
        if unknown:
            raise SystemExit(f"airflow:users:{username}:roles: unknown role(s) {', '.join(unknown)}")
        details = {
            "first_name": user.get("first_name", username),
            "last_name": user.get("last_name", "-"),
            "email": user.get("email", f"{username}@localhost"),
        }
        account = security_manager.find_user(username=username)
        if account is None:
            security_manager.add_user(username=username, role=roles, password=user["password"], **details)
            changes.append(f"{username} created")
            continue
        updated = [key for key, value in details.items() if getattr(account, key) != value]
        if {role.name for role in account.roles} != set(user["roles"]):
            updated.append("roles")
        if updated:
            for key, value in details.items():
                setattr(account, key, value)
            account.roles = roles
            security_manager.update_user(account)
            changes.append(f"{username}: {', '.join(updated)} updated")
        if not check_password_hash(account.password, user["password"]):
            security_manager.reset_password(account.id, user["password"])
            changes.append(f"{username}: password changed")
    return changes


def main():
    wanted = json.load(sys.stdin)
    # The FAB provider's own way in, as `airflow users` takes it (Airflow 2 and 3).
    with get_application_builder() as appbuilder:
        changes = sync(appbuilder.sm, wanted)
    comment = "; ".join(changes) or "roles and users as in the pillar"
    print(f'changed={"yes" if changes else "no"} comment="{comment}"')


if __name__ == "__main__":
    main()
