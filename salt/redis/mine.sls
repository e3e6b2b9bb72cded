{#- The Salt mine keeps this node's last Redis replication status on the
    master, refreshed every 10 seconds, so that a forced failover can say
    how far the lost master had written and refuse a replica too far behind
    (failover:max_redis_lag_bytes, salt-run airflow_ha.plan). #}
include:
  - redis.module_settings

redis-status-to-mine:
  schedule.present:
    - name: airflow-ha-redis-status
    - function: mine.send
    - job_args: [redis_replication.status]
    - seconds: 10
    - return_job: false
    - require:
      - grains: redis-module-settings
