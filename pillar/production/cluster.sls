cluster:
  # A short name for the environment; shown to operators.
  name: production

  # The node that runs the PostgreSQL primary and the Redis master when the
  # environment is first deployed, and the one orch.failback brings back. The
  # other nodes with the postgresql and redis roles become its standby and
  # replica. After a failover the primary is the topology record's
  # (salt-run airflow_ha.topology), which the states follow; do not edit this
  # key to move the primary: run orch.failover.
  primary: airflow-server1

  # Every node of the environment, by minion id (which is also the host name
  # the other nodes resolve: the common state writes each node into
  # /etc/hosts on every node).
  nodes:
    airflow-server1:
      # The node's address on the cluster network. Services bind to it and
      # the other nodes reach the node through it.
      address: 10.11.12.10
      # What the node runs. Roles are data: moving a service to another node,
      # adding a third server or a second worker is an edit here, never a
      # state edit. Known roles (salt/roles.yaml maps each to its states):
      #   postgresql         PostgreSQL; one node is the primary, the others
      #                      streaming-replication standbys
      #   redis              Redis, the Celery broker; one master, the others
      #                      replicas
      #   airflow-webserver  the Airflow UI and REST API
      #   airflow-scheduler  an Airflow scheduler (run at least two)
      #   airflow-flower     Flower, the Celery monitoring UI
      #   airflow-worker     a Celery worker
      #   haproxy            the load balancer in front of the webservers and
      #                      Flowers (the seed's cloud load balancer runs the
      #                      equivalent; give the role to a node only where
      #                      HAProxy is self-hosted)
      #   monitoring         Prometheus and Alertmanager (one node); while a
      #                      node has it, every node runs the exporters
      #   backup             the pgBackRest repository (one node, not a
      #                      database server): backups, the WAL archive, and
      #                      copies of the Redis broker's data
      roles:
        - postgresql
        - redis
        - airflow-webserver
        - airflow-scheduler
        - airflow-flower
    airflow-server2:
      # Deploy the two servers in different racks, preferably different rooms.
      address: 10.11.12.20
      roles:
        - postgresql
        - redis
        - airflow-webserver
        - airflow-scheduler
        - airflow-flower
    airflow-worker1:
      # Workers sit on the same network as the servers.
      address: 10.11.12.30
      roles:
        - airflow-worker
    airflow-mon1:
      # Monitoring on a node of its own, so that it sees the servers fail
      # from outside; any node can hold it (the lab's load balancer does).
      address: 10.11.12.40
      roles:
        - monitoring
    airflow-backup1:
      # The backup repository on a host of its own, in another room than
      # both servers if you can: it is what is left when both are lost.
      # Give it disk for a week of backups and WAL (pgbackrest:repository).
      address: 10.11.12.50
      roles:
        - backup
