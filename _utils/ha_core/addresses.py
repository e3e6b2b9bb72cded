"""
Node addresses as the modules take them: ``HOST``, ``HOST:PORT`` or
``[IPV6]:PORT``; the port defaults to the caller's.
"""

import re

from ha_core.errors import InvalidInput

_ADDRESS = re.compile(
    r"\[(?P<ipv6>[^\]\s]+)\](?::(?P<ipv6_port>\d+))?|(?P<host>[^:\[\]\s\"'\\]+)(?::(?P<port>\d+))?"
)


def parse(node, default_port):
    """
    Return ``(host, port)`` of ``node``; InvalidInput when it is not an
    address or its port is out of range.
    """
    match = _ADDRESS.fullmatch(str(node).strip())
    port = match and (match.group("ipv6_port") or match.group("port") or default_port)
    if not match or not 0 < int(port) < 65536:
        raise InvalidInput(f"{node!r} is not a node address",
                           fix="give HOST or HOST:PORT ([IPV6]:PORT for IPv6)")
    return match.group("ipv6") or match.group("host"), int(port)


def join(host, port):
    """Return ``HOST:PORT`` (``[IPV6]:PORT`` for an IPv6 address)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
