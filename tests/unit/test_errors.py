"""ha_core.errors: one message style, and how Salt-side code reports them."""

import pytest

from ha_core import errors


class SaltError(Exception):
    pass


class SaltInvocation(Exception):
    pass


def test_a_message_says_what_failed_where_things_stand_and_what_to_do():
    error = errors.Refused("refusing to promote s2", now="it is fenced", fix="rejoin it first")
    assert str(error) == "refusing to promote s2; it is fenced; rejoin it first"
    assert str(errors.OperationFailed("pg_ctl failed")) == "pg_ctl failed"


def test_invalid_input_is_a_value_error():
    assert issubclass(errors.InvalidInput, ValueError)


def test_reported_as_turns_core_errors_into_salts_with_the_same_message():
    @errors.reported_as(SaltError, invalid_input=SaltInvocation)
    def act(kind):
        raise kind("what", fix="how")

    with pytest.raises(SaltError, match="^what; how$"):
        act(errors.Unreachable)
    with pytest.raises(SaltInvocation, match="^what; how$"):
        act(errors.InvalidInput)


def test_reported_as_leaves_results_other_exceptions_and_the_signature_alone():
    @errors.reported_as(SaltError)
    def act(value, fail=False):
        """Doc."""
        if fail:
            raise KeyError(value)
        return value

    assert act(3) == 3 and act.__doc__ == "Doc." and act.__wrapped__.__name__ == "act"
    with pytest.raises(KeyError):
        act(3, fail=True)
    with pytest.raises(SaltError):
        errors.reported_as(SaltError)(lambda: (_ for _ in ()).throw(errors.InvalidInput("x")))()
