"""ha_core.addresses: the one parser of node addresses."""

import pytest

from ha_core.addresses import join, parse
from ha_core.errors import InvalidInput


@pytest.mark.parametrize("node, expected", [
    ("10.11.12.10", ("10.11.12.10", 5432)),
    ("airflow-server1:6543", ("airflow-server1", 6543)),
    ("[fd00::10]:5433", ("fd00::10", 5433)),
    ("[fd00::10]", ("fd00::10", 5432)),
    (" 10.11.12.10:5432 ", ("10.11.12.10", 5432)),
])
def test_host_and_port_with_the_default_port(node, expected):
    assert parse(node, 5432) == expected


@pytest.mark.parametrize("node", ["", "a b", "host:port", "host:0", "host:70000", 'ho"st',
                                  "fd00::10:5432"])
def test_anything_else_is_refused_naming_the_forms(node):
    with pytest.raises(InvalidInput, match="give HOST or HOST:PORT"):
        parse(node, 5432)


def test_join_brackets_ipv6_addresses():
    assert join("10.11.12.10", 5432) == "10.11.12.10:5432"
    assert join("fd00::10", 5432) == "[fd00::10]:5432"
    assert parse(join("fd00::10", 5433), 1) == ("fd00::10", 5433)
