{#- The Salt mine keeps this node's last replication status on the master,
    refreshed every 10 seconds, so that an unplanned failover can say how
    far a lost primary had written (salt-run airflow_ha.plan). #}
include:
  - postgresql.module_settings

postgresql-status-to-mine:
  schedule.present:
    - name: airflow-ha-pg-status
    - function: mine.send
    - job_args: [pg_replication.status]
    - seconds: 10
    - return_job: false
    - require:
      - grains: postgresql-module-settings
