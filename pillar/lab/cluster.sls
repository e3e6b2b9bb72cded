# Nodes of the lab. bin/lab reads this file too: every node listed here is
# booted as a machine with this address on the lab bridge (10.11.12.0/24).
# Keys are documented in pillar/production/cluster.sls.
cluster:
  name: lab
  primary: airflow-server1
  nodes:
    airflow-lb1:
      address: 10.11.12.5
      roles: [haproxy, monitoring, backup]
    airflow-server1:
      address: 10.11.12.10
      roles: [postgresql, redis, airflow-webserver, airflow-scheduler, airflow-flower]
    airflow-server2:
      address: 10.11.12.20
      roles: [postgresql, redis, airflow-webserver, airflow-scheduler, airflow-flower]
    airflow-worker1:
      address: 10.11.12.30
      roles: [airflow-worker]
