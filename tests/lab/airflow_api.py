"""Airflow through the lab's load balancer, as users and clients reach it,
on either release line: Airflow 3 (health at /api/v2/monitor/health, REST
API v2 with a token from /auth/token, the UI's login at /auth/login/) or
Airflow 2 (/health, REST API v1 with basic auth, /login/). Which one
answers is asked of the lab, so a test reads the same on both, and across
an upgrade."""

import time

import requests

from lab.settings import lab_balancer_address

BALANCER = lab_balancer_address()
UI = f"https://{BALANCER}"
HEALTH_PATHS = {3: "/api/v2/monitor/health", 2: "/health"}
LOGIN_PATHS = {3: "/auth/login/", 2: "/login/"}
API_PATHS = {3: "/api/v2", 2: "/api/v1"}


def wait_until(check, timeout, what, interval=1):
    """Poll check() until it returns a true value; return that value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (requests.RequestException, ValueError) as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"{what} not reached in {timeout} s (last: {last!r})")


def _answering_health(base, timeout):
    """(release line, health body) of the Airflow that answers at base, or
    None while none does (restarting, or HAProxy has no server up)."""
    for line in (3, 2):
        reply = requests.get(f"{base}{HEALTH_PATHS[line]}", timeout=timeout)
        if reply.status_code == 200 and reply.headers.get(
                "content-type", "").startswith("application/json"):
            return line, reply.json()
    return None


def release_line(base=UI):
    """3 when an Airflow 3 API server answers at base, 2 for an Airflow 2
    webserver; waits (a minute at most) while neither answers."""
    return wait_until(lambda: _answering_health(base, 5), 60, f"Airflow answering at {base}")[0]


def health(base=UI, timeout=5):
    """The JSON body of the health endpoint at base (either line's);
    requests.HTTPError while no Airflow answers there."""
    answer = _answering_health(base, timeout)
    if answer is None:
        raise requests.HTTPError(f"no Airflow health endpoint answers at {base}")
    return answer[1]


def healthy(body):
    """The database and the schedulers healthy (and Airflow 3's DAG
    processor, once it has reported)."""
    dag_processor = (body.get("dag_processor") or {}).get("status")
    return body.get("metadatabase", {}).get("status") == "healthy" and \
        body.get("scheduler", {}).get("status") == "healthy" and \
        dag_processor in (None, "healthy")


def login_url(base=UI):
    return f"{base}{LOGIN_PATHS[release_line(base)]}"


class Api:
    """The REST API as one login uses it: v2 with a bearer token (fetched
    once, from /auth/token) on Airflow 3, v1 with basic auth on Airflow 2.
    ``login`` is (username, password), or None for an anonymous client."""

    def __init__(self, login=None, base=UI):
        self.base, self.login = base, tuple(login) if login else None
        self.line = release_line(base)
        self.root = f"{base}{API_PATHS[self.line]}"
        self._token = None

    def token_reply(self):
        """POST /auth/token with the login (Airflow 3)."""
        username, password = self.login
        return requests.post(f"{self.base}/auth/token", timeout=10,
                             json={"username": username, "password": password})

    def auth_kwargs(self):
        """The requests keyword arguments that authenticate a call as the login."""
        if self.login is None:
            return {}
        if self.line == 2:
            return {"auth": self.login}
        if self._token is None:
            reply = self.token_reply()
            if not reply.ok:  # a wrong password: the call goes anonymous, and gets 401
                return {}
            self._token = reply.json()["access_token"]
        return {"headers": {"Authorization": f"Bearer {self._token}"}}

    def request(self, method, path, **kwargs):
        return requests.request(method, f"{self.root}{path}", timeout=10, **self.auth_kwargs(), **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def trigger_reply(self, dag_id, conf=None):
        """POST a new run of dag_id (Airflow 3 wants a logical date: none)."""
        body = {"conf": conf or {}}
        if self.line == 3:
            body["logical_date"] = None
        return self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)

    def trigger(self, dag_id, conf=None):
        """Start a run of dag_id; returns its run id."""
        created = self.trigger_reply(dag_id, conf)
        assert created.status_code == 200, created.text
        return created.json()["dag_run_id"]

    def run_state(self, dag_id, run_id):
        """success or failed once the run has finished, else None."""
        state = self.get(f"/dags/{dag_id}/dagRuns/{run_id}").json()["state"]
        return state if state in ("success", "failed") else None

    def task_state(self, dag_id, run_id, task_id):
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}").json() \
            .get("state")

    def xcom(self, dag_id, run_id, task_id, key="return_value"):
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/"
                        f"xcomEntries/{key}").json()["value"]
