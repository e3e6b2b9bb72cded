"""The fence agent as the master runs it (ha_nodes.run_fence_agent), with
real programs standing in for a cloud CLI or an IPMI call."""

import pytest

from ha_core.errors import OperationFailed
from ha_nodes import run_fence_agent

NODE, ADDRESS = "airflow-server1", "10.11.12.10"


def test_the_agent_gets_the_node_and_its_address_last(tmp_path):
    said = tmp_path / "said"
    agent = f"sh -c 'echo \"$0 $1\" > {said}'"
    assert run_fence_agent(agent, NODE, ADDRESS, 10) == "by the fence agent sh"
    assert said.read_text() == f"{NODE} {ADDRESS}\n"


def test_an_agent_that_fails_is_named_with_its_exit_status_and_last_words():
    agent = "sh -c 'echo connecting >&2; echo power off refused: no such host >&2; exit 3'"
    with pytest.raises(OperationFailed) as failed:
        run_fence_agent(agent, NODE, ADDRESS, 10)
    assert str(failed.value) == (f"the fence agent sh failed for {NODE} (exit 3): connecting "
                                 "power off refused: no such host")


def test_an_agent_that_hangs_fails_after_the_wait():
    with pytest.raises(OperationFailed, match=f"the fence agent sh failed for {NODE}: .*timed out"):
        run_fence_agent("sh -c 'sleep 30'", NODE, ADDRESS, 0.5)


def test_an_agent_that_is_not_installed_fails_with_the_reason():
    with pytest.raises(OperationFailed, match="No such file"):
        run_fence_agent("/usr/local/sbin/no-such-fence-agent", NODE, ADDRESS, 10)
