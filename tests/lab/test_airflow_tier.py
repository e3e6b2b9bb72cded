"""Airflow on the lab, through the load balancer as a user reaches it: health,
the authenticated REST API running ha_smoke on the worker, Flower, HAProxy's
stats, and the UI surviving a stopped webserver."""

import json
import time

import pytest
import requests

from lab.settings import lab_balancer_address
from tests.conftest import ARTIFACTS, bin_lab

pytestmark = pytest.mark.lab

BALANCER = lab_balancer_address()
UI = f"https://{BALANCER}"
API = f"{UI}/api/v1"
FLOWER = f"http://{BALANCER}:5555"
STATS = f"http://{BALANCER}:8404/stats"


@pytest.fixture(scope="module")
def credentials(lab):
    logins = json.loads(bin_lab("credentials", "--json").stdout)
    return {name: (login["username"], login["password"]) for name, login in logins.items()}


def wait_until(check, timeout, what, interval=2):
    """Poll check() until it returns a true value; return that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except requests.RequestException as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"{what} not reached in {timeout} s (last: {last!r})")


def healthy(body):
    return body.get("metadatabase", {}).get("status") == "healthy" and \
        body.get("scheduler", {}).get("status") == "healthy"


@pytest.fixture(scope="module")
def airflow_up(lab):
    """Airflow healthy through the balancer (schedulers heartbeat within a minute)."""
    return wait_until(lambda: healthy(requests.get(f"{UI}/health", timeout=5).json()),
                      300, "a healthy /health through HAProxy")


def test_health_reports_database_and_scheduler_healthy(airflow_up):
    body = requests.get(f"{UI}/health", timeout=5).json()
    assert body["metadatabase"]["status"] == "healthy"
    assert body["scheduler"]["status"] == "healthy"


def test_anonymous_api_calls_get_401(airflow_up):
    assert requests.get(f"{API}/dags", timeout=10).status_code == 401


def test_ha_smoke_runs_on_the_celery_worker(airflow_up, credentials):
    admin = credentials["admin"]
    wait_until(lambda: requests.get(f"{API}/dags/ha_smoke", auth=admin, timeout=10).ok,
               180, "ha_smoke parsed by the scheduler")
    started = time.monotonic()
    created = requests.post(f"{API}/dags/ha_smoke/dagRuns", json={}, auth=admin, timeout=10)
    assert created.status_code == 200, created.text
    run_id = created.json()["dag_run_id"]

    def finished():
        state = requests.get(f"{API}/dags/ha_smoke/dagRuns/{run_id}", auth=admin,
                             timeout=10).json()["state"]
        return state if state in ("success", "failed") else None

    assert wait_until(finished, 300, "ha_smoke finished") == "success"
    xcom = requests.get(f"{API}/dags/ha_smoke/dagRuns/{run_id}/taskInstances/worker_hostname/"
                        "xcomEntries/return_value", auth=admin, timeout=10).json()
    assert xcom["value"] == "airflow-worker1"
    print(f"ha_smoke: triggered through HAProxy, ran on {xcom['value']} in "
          f"{time.monotonic() - started:.1f} s")


def test_flower_requires_its_password_and_lists_the_worker(airflow_up, credentials):
    assert requests.get(f"{FLOWER}/api/workers", timeout=10).status_code == 401
    workers = wait_until(
        lambda: requests.get(f"{FLOWER}/api/workers?refresh=1", auth=credentials["flower"],
                             timeout=30).json(),
        120, "Flower listing a worker")
    assert "celery@airflow-worker1" in workers


def test_haproxy_stats_require_a_password(airflow_up, credentials):
    assert requests.get(STATS, timeout=10).status_code == 401
    assert requests.get(STATS, auth=credentials["stats"], timeout=10).status_code == 200


def test_airflow_config_is_readable_by_airflow_only(lab):
    for node in ("airflow-server1", "airflow-server2", "airflow-worker1"):
        mode = bin_lab("exec", node, "--", "stat", "-c", "%a %U", "/opt/airflow/airflow.cfg").stdout
        assert mode.strip() == "600 airflow"


@pytest.mark.destructive
def test_ui_and_api_keep_answering_with_one_webserver_stopped(airflow_up, credentials):
    bin_lab("exec", "airflow-server1", "--", "systemctl", "stop", "airflow-webserver")
    try:
        time.sleep(5)  # HAProxy marks it down after two failed checks, 2 s apart
        for _ in range(20):
            assert requests.get(f"{UI}/health", timeout=10).status_code == 200
            assert requests.get(f"{API}/dags", auth=credentials["admin"], timeout=10).status_code == 200
            assert requests.get(f"{UI}/login/", timeout=10).status_code == 200
    finally:
        bin_lab("exec", "airflow-server1", "--", "systemctl", "start", "airflow-webserver")
    wait_until(lambda: requests.get("http://10.11.12.10:8080/health", timeout=5).ok, 180,
               "airflow-server1's webserver back")


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless, driven through chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    # The lab's certificate is self-signed (the requests of the tests trust it).
    for flag in ("--headless", "--ignore-certificate-errors", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


def test_admin_logs_into_the_ui_through_haproxy_and_sees_the_dag_list(airflow_up, credentials, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    username, password = credentials["admin"]
    browser.get(f"{UI}/login/")
    browser.find_element(By.ID, "username").send_keys(username)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit], button[type=submit]").click()
    WebDriverWait(browser, 60).until(
        expected_conditions.presence_of_element_located((By.LINK_TEXT, "ha_smoke")))
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "airflow-ui-dag-list.png"))
    assert browser.current_url.startswith(UI)
    assert "ha_smoke" in browser.page_source
