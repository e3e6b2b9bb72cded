# Component settings. Each key overrides salt/<component>/defaults.yaml and
# the OS-family values in salt/<component>/osfamilymap.yaml; leave out what
# the defaults get right.
postgresql:
  # PostgreSQL major version (the seed's production target is 14).
  version: 14
  # A warm standby accepts no queries (the seed's choice); true for hot standby.
  hot_standby: false
redis: {}
# Airflow: the release every Airflow node runs (salt/airflow/defaults.yaml:
# 3.3.2; 2.10.5 is supported too). A cluster stays on its release line: a
# highstate refuses to move a node from Airflow 2 to 3 (README: Airflow
# versions). With no haproxy node (the seed's cloud load balancer), Airflow 3
# needs the load balancer's addresses: base_url, which users reach the UI by
# (links, redirects), and execution_api_url, an internal listener that the
# workers reach and that forwards to port 8080 of every airflow-webserver
# node (health check: GET /api/v2/monitor/health, healthy only while the
# JSON body has "metadatabase": {"status": "healthy"}).
airflow:
  # version: 3.3.2
  base_url: https://airflow.example.com
  execution_api_url: http://airflow-internal.example.com:8080/execution/
# Only on nodes with the haproxy role; the backends are the nodes whose roles
# include airflow-webserver and airflow-flower. The keys and their defaults
# (salt/haproxy/defaults.yaml), all optional:
haproxy: {}
#   bind_address: '*'            # where the frontends listen on the node
#   airflow_port: 80             # the Airflow UI and REST API
#   flower_frontend_port: 5555   # Flower
#   execution_api_port: 8080     # Airflow 3's execution API, for the Airflow
#                                # nodes only, on the node's cluster address
#   stats_port: 8404             # the statistics page, http://NODE:8404/stats
#   stats_user: admin            # its user (the password is in secrets.sls)
#   stats_refresh: 5s
#   webserver_port: 8080         # the API server's port (Airflow 2: the webserver's)
#   flower_port: 5555            # Flower's --port on the Flower nodes
#   balance: roundrobin          # balance algorithm of both backends
#   timeouts:                    # HAProxy `timeout NAME VALUE` lines
#     connect: 5s
#     client: 60s
#     server: 120s               # keep >= Airflow's web_server_worker_timeout
#     http-request: 10s
#     http-keep-alive: 10s
#     queue: 30s
#     tunnel: 1h
#     check: 2s
#   check:                       # health checks: a stopped server is out
#     inter: 2s                  # after `fall` failed checks `inter` apart
#     fall: 2
#     rise: 2
#   retries: 2                   # failed connections retried, the last on
#                                # another server (option redispatch)
# orch.failover (_runners/airflow_ha.py), optional: with the primary down and
# force given, the failover still refuses when more WAL than this is known to
# be missing on the standby (the primary's last position in the Salt mine
# against what the standby has received).
# The fence agent: a command the master runs, with the node's name and
# address as its last two arguments, to power a former primary off before a
# forced failover promotes the other server (when its minion does not
# answer). It must exit 0 only once the node is off; the runbook then checks
# that its PostgreSQL and Redis ports are closed. Without one, the operator
# names the node after powering it off: pillar='{"force": true, "fenced": NODE}'.
# max_redis_lag_bytes bounds a forced Redis promotion the same way, from the
# master's last replication offset in the Salt mine.
# failover:
#   max_lag_bytes: 16777216      # 16 MiB
#   max_redis_lag_bytes: 1048576 # 1 MiB
#   fence: /usr/local/sbin/fence-airflow-node   # for example an IPMI or cloud CLI wrapper

# Where alerts go (salt/monitoring/defaults.yaml has the thresholds and
# waits): Alertmanager's own configuration format. Examples: mail to the
# on-call list, and a webhook (a chat or paging bridge).
monitoring:
  alertmanager:
    global:
      smtp_smarthost: mail.example.com:587
      smtp_from: airflow-alerts@example.com
    route:
      receiver: on-call
      routes:
        - matchers: ['severity="critical"']
          receiver: on-call-and-pager
    receivers:
      - name: on-call
        email_configs:
          - to: airflow-oncall@example.com
            send_resolved: true
      - name: on-call-and-pager
        email_configs:
          - to: airflow-oncall@example.com
            send_resolved: true
        webhook_configs:
          - url: https://pager.example.com/hooks/airflow
            send_resolved: true

# Backups (salt/pgbackrest/defaults.yaml has every key): when each type
# runs (systemd calendar expressions, in the backup node's time zone), and
# how much point-in-time recovery the repository keeps. The defaults: a
# full backup on Sundays, a differential one the other nights, an
# incremental one every three hours, a week of recovery.
# pgbackrest:
#   schedule:
#     full: 'Sun *-*-* 01:00:00'
#     diff: 'Mon..Sat *-*-* 01:00:00'
#     incr: '*-*-* 04,07,10,13,16,19,22:00:00'
#   repository:
#     retention_days: 7
# Or the repository in an S3-compatible object store (the backup node runs
# the backups and holds none; the Redis copies stay on its disk); its keys
# go in secrets.sls, pgbackrest:repository:s3:key and key_secret:
#     type: s3
#     path: /airflow                 # the prefix in the bucket
#     s3:
#       bucket: example-airflow-backups
#       endpoint: s3.eu-west-1.amazonaws.com
#       region: eu-west-1
#       uri_style: host              # or path, for stores that need it
