"""Airflow on the lab, through the load balancer as a user reaches it: health,
the authenticated REST API running ha_smoke on the worker, Flower, HAProxy's
stats, and the UI surviving a stopped API server (webserver on Airflow 2)."""

import json
import time

import pytest
import requests

from tests.conftest import ARTIFACTS, bin_lab
from tests.lab.airflow_api import BALANCER, UI, Api, health, healthy, login_url, wait_until

pytestmark = pytest.mark.lab

FLOWER = f"http://{BALANCER}:5555"
STATS = f"http://{BALANCER}:8404/stats"


@pytest.fixture(scope="module")
def credentials(lab):
    logins = json.loads(bin_lab("credentials", "--json").stdout)
    return {name: (login["username"], login["password"]) for name, login in logins.items()}


@pytest.fixture(scope="module")
def airflow_up(lab):
    """Airflow healthy through the balancer (schedulers heartbeat within a minute)."""
    return wait_until(lambda: healthy(health()), 300, "Airflow healthy through HAProxy")


def test_health_reports_database_scheduler_and_dag_processor_healthy(airflow_up):
    body = health()
    assert body["metadatabase"]["status"] == "healthy"
    assert body["scheduler"]["status"] == "healthy"
    assert body["dag_processor"]["status"] == "healthy"


def test_anonymous_api_calls_get_401(airflow_up):
    assert Api().get("/dags").status_code == 401


def test_ha_smoke_runs_on_the_celery_worker(airflow_up, credentials):
    admin = Api(credentials["admin"])
    wait_until(lambda: admin.get("/dags/ha_smoke").ok, 180, "ha_smoke parsed by the DAG processor")
    started = time.monotonic()
    run_id = admin.trigger("ha_smoke")
    assert wait_until(lambda: admin.run_state("ha_smoke", run_id), 300,
                      "ha_smoke finished") == "success"
    hostname = admin.xcom("ha_smoke", run_id, "worker_hostname")
    assert hostname == "airflow-worker1"
    print(f"ha_smoke: triggered through HAProxy (REST API v{admin.line}), ran on {hostname} in "
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
def test_ui_and_api_keep_answering_with_one_api_server_stopped(airflow_up, credentials):
    admin, login = Api(credentials["admin"]), login_url()
    bin_lab("exec", "airflow-server1", "--", "systemctl", "stop", "airflow-api-server")
    try:
        time.sleep(5)  # HAProxy marks it down after two failed checks, 2 s apart
        for _ in range(20):
            assert healthy(health())
            assert admin.get("/dags").status_code == 200
            assert requests.get(login, timeout=10).status_code == 200
    finally:
        bin_lab("exec", "airflow-server1", "--", "systemctl", "start", "airflow-api-server")
    wait_until(lambda: healthy(health("http://10.11.12.10:8080")), 180,
               "airflow-server1's API server back")


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
    browser.get(login_url())
    browser.find_element(By.ID, "username").send_keys(username)
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit], button[type=submit]").click()
    # Airflow 3's UI opens on its dashboard; the DAG list is a page of its own.
    WebDriverWait(browser, 60).until(lambda driver: "/login" not in driver.current_url)
    browser.get(f"{UI}/dags" if Api().line == 3 else f"{UI}/home")
    WebDriverWait(browser, 60).until(
        expected_conditions.presence_of_element_located((By.LINK_TEXT, "ha_smoke")))
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "airflow-ui-dag-list.png"))
    assert browser.current_url.startswith(UI)
    assert "ha_smoke" in browser.page_source
