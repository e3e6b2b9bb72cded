"""A client that keeps writing through a failover, run on a lab node with
Airflow's Python (psycopg2, redis): it commits rows to a PostgreSQL table
and pushes items to a Redis list, each with a new number, and records which
numbers were acknowledged, by which server, and when. After a failure it
reconnects: PostgreSQL through every database address with
target_session_attrs=read-write (as Airflow does), Redis to whichever node
answers ROLE as master.

The test sends this file on standard input with SETTINGS filled in; the
writer stops when STOP_FILE exists and prints one JSON object: for each of
"postgresql" and "redis", the acknowledged writes as [number, server, time].
"""

import json
import os
import threading
import time

import psycopg2
import redis

SETTINGS = {}  # replaced by the test: hosts, passwords, table, list key, stop file


def until_stopped(write, acknowledged):
    number = 0
    while not os.path.exists(SETTINGS["stop_file"]):
        number += 1
        try:
            server = write(number)
        except Exception:  # pylint: disable=broad-except
            write.reset()
            time.sleep(0.05)
            continue
        acknowledged.append([number, server, time.time()])
        time.sleep(0.02)


class PostgresWriter:
    def __init__(self):
        self.connection = None

    def __call__(self, number):
        if self.connection is None:
            self.connection = psycopg2.connect(
                host=",".join(SETTINGS["hosts"]), port=5432, dbname="airflow", user="airflow",
                password=SETTINGS["database_password"], target_session_attrs="read-write",
                connect_timeout=3)
            with self.connection.cursor() as cursor:
                cursor.execute("select host(inet_server_addr())")
                self.server = cursor.fetchone()[0]
        with self.connection.cursor() as cursor:
            cursor.execute(f"insert into {SETTINGS['table']} (n) values (%s)", (number,))
        self.connection.commit()
        return self.server

    def reset(self):
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # pylint: disable=broad-except
                pass
        self.connection = None


class RedisWriter:
    def __init__(self):
        self.client = None

    def __call__(self, number):
        if self.client is None:
            for host in SETTINGS["hosts"]:
                client = redis.Redis(host=host, password=SETTINGS["redis_password"],
                                     socket_timeout=3, socket_connect_timeout=3)
                try:
                    if client.role()[0] in (b"master", "master"):
                        self.client, self.server = client, host
                        break
                except redis.RedisError:
                    continue
            else:
                raise ConnectionError("no Redis master")
        self.client.rpush(SETTINGS["list_key"], number)
        return self.server

    def reset(self):
        self.client = None


def main():
    setup = psycopg2.connect(host=",".join(SETTINGS["hosts"]), port=5432, dbname="airflow",
                             user="airflow", password=SETTINGS["database_password"],
                             target_session_attrs="read-write")
    with setup, setup.cursor() as cursor:
        cursor.execute(f"create table {SETTINGS['table']} (n int primary key)")
    setup.close()
    acknowledged = {"postgresql": [], "redis": []}
    threads = [threading.Thread(target=until_stopped, args=(writer, acknowledged[kind]))
               for kind, writer in (("postgresql", PostgresWriter()), ("redis", RedisWriter()))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(acknowledged))


main()
