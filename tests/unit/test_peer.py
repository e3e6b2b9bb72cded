"""ha_core.peer: signed reports over a real socket on loopback."""

import io
import socket
import threading

import pytest

from ha_core import peer
from ha_core.errors import InvalidInput, Unreachable

KEY = b"k" * 32
REPORT = {"node": "airflow-server2", "record": {"primary": "airflow-server1", "generation": 2}}


def test_an_answer_verifies_with_its_challenge_and_key_only():
    line = peer.answer(KEY, b"c1", REPORT)
    assert peer.verified_report(KEY, b"c1", line) == REPORT
    with pytest.raises(InvalidInput, match="does not verify"):
        peer.verified_report(KEY, b"c2", line)  # a replayed answer
    with pytest.raises(InvalidInput, match="does not verify"):
        peer.verified_report(b"other", b"c1", line)
    with pytest.raises(InvalidInput, match="not a peer report"):
        peer.verified_report(KEY, b"c1", "garbage")


def test_a_tampered_report_does_not_verify():
    line = peer.answer(KEY, b"c1", REPORT).replace("airflow-server1", "airflow-server2")
    with pytest.raises(InvalidInput):
        peer.verified_report(KEY, b"c1", line)


def serve_once(key, report):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def run():
        connection, _ = listener.accept()
        with connection:
            stream = connection.makefile("rwb")
            peer.serve(key, lambda: report, stream, stream)
        listener.close()

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1]


def test_a_node_asked_over_tcp_returns_its_report():
    assert peer.ask("127.0.0.1", serve_once(KEY, REPORT), KEY) == REPORT


def test_a_report_signed_with_another_key_counts_as_no_answer():
    with pytest.raises(Unreachable, match="gave no report: it does not take this node's"):
        peer.ask("127.0.0.1", serve_once(b"other", REPORT), KEY)


def test_a_closed_port_counts_as_no_answer():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(Unreachable, match=f"127.0.0.1:{port} did not report"):
        peer.ask("127.0.0.1", port, KEY, timeout=1)


def test_a_node_answers_nothing_to_a_guard_without_the_key():
    out = io.BytesIO()
    peer.serve(KEY, lambda: REPORT, io.BytesIO(b"c1 0000\n"), out)
    assert out.getvalue().count(b"\n") == 1  # its challenge, and no report
    out = io.BytesIO()
    peer.serve(KEY, lambda: REPORT, io.BytesIO(b"\n"), out)
    assert out.getvalue().count(b"\n") == 1


def test_a_guard_without_the_key_gets_no_report_over_tcp():
    port = serve_once(KEY, REPORT)
    with socket.create_connection(("127.0.0.1", port), timeout=3) as connection:
        stream = connection.makefile("rwb")
        stream.readline()
        stream.write(b"c1 " + b"0" * 64 + b"\n")
        stream.flush()
        assert stream.readline() == b""


def test_an_empty_key_file_is_refused(tmp_path):
    (tmp_path / "key").write_text("\n")
    with pytest.raises(InvalidInput, match="is empty"):
        peer.read_key(str(tmp_path / "key"))
