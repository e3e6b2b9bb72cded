"""
Give this node's running Redis a new password without a restart, before
anything uses it (see ``_modules/redis_replication.py``).

.. code-block:: yaml

    redis-password-accepted:
      redis_replication.password_accepted:
        - name: redis:password

The password is read from the pillar key ``name`` on the node: it is
neither in the state's arguments nor in its change output.
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError


def password_accepted(name):
    """
    Ensure this node's running Redis accepts the password at the pillar key
    ``name``, and authenticates to its master with it; the old password
    stays accepted until ``redis_replication.retire_passwords``. A Redis
    that is not running takes the password from its auth file when it
    starts.
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    try:
        outcome = __salt__["redis_replication.accept_password"](name, test=__opts__["test"])
    except (CommandExecutionError, SaltInvocationError) as error:
        ret["result"] = False
        ret["comment"] = str(error)
        return ret
    if not outcome["running"]:
        ret["comment"] = "Redis is not running: it takes the password from its auth file when it starts"
    elif not outcome["changes"]:
        ret["comment"] = "Redis accepts the password"
    elif __opts__["test"]:
        ret["result"] = None
        ret["comment"] = "Redis would take the new password: " + "; ".join(outcome["changes"])
        ret["changes"] = {"redis": outcome["changes"]}
    else:
        ret["comment"] = "Redis took the new password"
        ret["changes"] = {"redis": outcome["changes"]}
    return ret
