"""Fixtures of the lab tests."""

import pytest

from tests.lab.airflow_api import health, healthy, wait_until


@pytest.fixture(scope="module")
def airflow_healthy(lab):
    """Airflow healthy through HAProxy, as a test module starts from."""
    return wait_until(lambda: healthy(health()), 300, "Airflow healthy through HAProxy")
