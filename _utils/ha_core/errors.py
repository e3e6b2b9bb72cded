"""
The kinds of failure, one exception type each, shared by the execution
modules, the states, the runner and the start guards.

A message says what failed, then, when it helps, where the cluster stands
and what to do, in that order and joined by "; ":

    refusing to promote airflow-server2: it is fenced; rejoin it first

Salt-side code reports them as Salt's own exceptions with ``reported_as``.
"""

import functools


class HaError(Exception):
    """Something the operator must know about; ``str()`` is the message."""

    def __init__(self, what, now=None, fix=None):
        self.what, self.now, self.fix = what, now, fix
        super().__init__("; ".join(part for part in (what, now, fix) if part))


class InvalidInput(HaError, ValueError):
    """An argument, a setting or a file's content that cannot be used."""


class Unreachable(HaError):
    """A node or server that does not answer."""


class Refused(HaError):
    """An action that would be unsafe now (two primaries, lost data)."""


class OperationFailed(HaError):
    """A server, a program or a step that did not do what it was asked."""


def reported_as(salt_exception, invalid_input=None):
    """
    Decorator for Salt-side public functions: a HaError they raise is raised
    again as ``salt_exception`` (for example ``CommandExecutionError``), or
    an InvalidInput as ``invalid_input`` when given (``SaltInvocationError``),
    with the same message, so that Salt reports a failure, not a traceback.
    """
    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except InvalidInput as error:
                raise (invalid_input or salt_exception)(str(error)) from error
            except HaError as error:
                raise salt_exception(str(error)) from error

        return wrapper

    return decorate
