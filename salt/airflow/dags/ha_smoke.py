"""ha_smoke: one task on the Celery queue that returns the host name of the
worker that ran it. The lab tests trigger it through the REST API behind
HAProxy to prove the whole chain: webserver, scheduler, broker, worker,
metadata database."""

import socket

import pendulum
from airflow.decorators import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    is_paused_upon_creation=False,
    tags=["smoke"],
)
def ha_smoke():
    @task
    def worker_hostname():
        return socket.gethostname()

    worker_hostname()


ha_smoke()
