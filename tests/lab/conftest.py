"""Fixtures of the lab tests."""

import pytest
import requests

from lab.settings import lab_balancer_address
from tests.lab.test_airflow_tier import healthy, wait_until


@pytest.fixture(scope="module")
def airflow_healthy(lab):
    """Airflow healthy through HAProxy, as a test module starts from."""
    health = f"https://{lab_balancer_address()}/health"
    return wait_until(lambda: healthy(requests.get(health, timeout=5).json()),
                      300, "a healthy /health through HAProxy")
