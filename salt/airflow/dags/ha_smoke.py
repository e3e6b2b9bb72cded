"""ha_smoke: one task on the Celery queue that returns the host name of the
worker that ran it. The lab tests trigger it through the REST API behind
HAProxy to prove the whole chain: API server (or webserver), scheduler,
broker, worker, metadata database. With `{"sleep_seconds": N}` as the run's
conf the task sleeps first, so that a run can span a failover. The same
file runs on Airflow 2.10 and 3."""

import socket
import time

import pendulum

try:
    from airflow.sdk import dag, task
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    params={"sleep_seconds": 0},
    tags=["smoke"],
)
def ha_smoke():
    @task
    def worker_hostname(params=None):
        time.sleep(int(params["sleep_seconds"]))
        return socket.gethostname()

    worker_hostname()


ha_smoke()
