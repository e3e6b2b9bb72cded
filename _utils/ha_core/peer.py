"""
The peer report: what a database node says about itself to the start guard
of another, over TCP, before either runs PostgreSQL or Redis (which a warm
standby does not answer SQL on anyway). The guards need it to prove that a
node may start as the writer: the other node's copy of the topology record
(its generation) and whether its PostgreSQL and Redis are, or will start
as, followers.

Both sides prove they hold the cluster's peer key (identical on the
database nodes, readable by root only), with HMAC-SHA256: the node sends a
random challenge line; the guard answers with a challenge of its own and
a MAC over both (the node answers nobody else); the node answers one JSON
line: its report and a MAC over the guard's challenge and the report. A
report that does not verify counts as no answer, so nobody can talk a
guard into starting a second writer, nor replay an old report, and
nobody without the key learns what a node reports.
"""

import hashlib
import hmac
import json
import os
import socket

from ha_core.errors import InvalidInput, Unreachable

_TIMEOUT_SECONDS = 3
_MAX_LINE = 65536


def _mac(key, challenge, report_text):
    return hmac.new(key, challenge + b"\n" + report_text.encode(), hashlib.sha256).hexdigest()


def _request(key, node_challenge, guard_challenge):
    """The guard's line: its challenge, and a MAC proving it holds the key."""
    mac = hmac.new(key, b"ask\n" + node_challenge + b"\n" + guard_challenge, hashlib.sha256)
    return guard_challenge + b" " + mac.hexdigest().encode() + b"\n"


def read_key(path):
    """The peer key (bytes) from its file; InvalidInput when it is empty."""
    with open(path, "rb") as stream:
        key = stream.read().strip()
    if not key:
        raise InvalidInput(f"the peer key file {path} is empty",
                           fix="apply the highstate (salt NODE state.apply)")
    return key


def answer(key, challenge, report):
    """The line a node answers ``challenge`` with: its report, signed."""
    text = json.dumps(report, sort_keys=True)
    return json.dumps({"report": text, "mac": _mac(key, challenge, text)}) + "\n"


def verified_report(key, challenge, line):
    """The report in a node's answer line, or InvalidInput when the line is
    not an answer to ``challenge`` signed with ``key``."""
    try:
        message = json.loads(line)
        text, mac = message["report"], message["mac"]
    except (ValueError, KeyError, TypeError):
        raise InvalidInput("the answer is not a peer report") from None
    if not hmac.compare_digest(_mac(key, challenge, text), str(mac)):
        raise InvalidInput("the report's signature does not verify (another peer key?)")
    return json.loads(text)


def ask(host, port, key, timeout=_TIMEOUT_SECONDS):
    """
    The report of the node at host:port; Unreachable when it does not
    answer in time, or answers with a report that does not verify.
    """
    challenge = os.urandom(16).hex().encode()
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            stream = connection.makefile("rwb")
            node_challenge = stream.readline(_MAX_LINE).strip()
            stream.write(_request(key, node_challenge, challenge))
            stream.flush()
            line = stream.readline(_MAX_LINE)
    except OSError as error:
        raise Unreachable(f"{host}:{port} did not report ({error})") from None
    if not line:
        raise Unreachable(f"{host}:{port} gave no report: it does not take this node's peer "
                          "key (apply the highstate on both)")
    try:
        return verified_report(key, challenge, line.decode(errors="replace"))
    except InvalidInput as error:
        raise Unreachable(f"{host}:{port} did not report: {error}") from None


def serve(key, report_of, stdin, stdout):
    """
    Answer one guard (a socket-activated connection: stdin and stdout are
    the socket) with ``report_of()``, signed, if it proves it holds the key;
    answer nothing otherwise.
    """
    node_challenge = os.urandom(16).hex().encode()
    stdout.write(node_challenge + b"\n")
    stdout.flush()
    guard_challenge, _, mac = stdin.readline(_MAX_LINE).strip().partition(b" ")
    if guard_challenge and hmac.compare_digest(
            _request(key, node_challenge, guard_challenge), guard_challenge + b" " + mac + b"\n"):
        stdout.write(answer(key, guard_challenge, report_of()).encode())
        stdout.flush()
