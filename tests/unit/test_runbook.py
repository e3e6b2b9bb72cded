"""ha_core.runbook: every step the runner runs has a title and advice that
name its nodes."""

import re

import pytest

from ha_core import runbook
from tests.conftest import REPO

RUNNER = (REPO / "_runners" / "airflow_ha.py").read_text()


def test_every_step_of_the_runner_is_in_the_catalogue_and_back():
    called = set(re.findall(r'return _step\("(\w+)"', RUNNER))
    assert called == set(runbook.STEPS)


@pytest.mark.parametrize("step", sorted(runbook.STEPS))
def test_title_and_advice_format_with_the_names_the_runner_gives(step):
    given = re.search(rf'return _step\("{step}", action((?:, \w+=\w+)*)\)', RUNNER).group(1)
    names = {name: f"<{name}>" for name in re.findall(r"(\w+)=", given)}
    title, advice = runbook.title(step, **names), runbook.advice(step, **names)
    assert "{" not in title and advice and "{" not in advice.replace('{"switch_back', "")
