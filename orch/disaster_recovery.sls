{#- Runbook: both database servers lost (README: Disaster recovery). Restore
    the Airflow database from the backup repository on one server, the
    primary again, rebuild the other as its standby, and bring Airflow back.

      salt-run state.orchestrate orch.disaster_recovery                      # the latest state
      salt-run state.orchestrate orch.disaster_recovery pillar='{"time": "2026-12-02 04:31:00+00:00"}'
      ... pillar='{"restore_point": NAME, "node": "airflow-server2", "backup_set": LABEL}'

    Every database server must answer (rebuilt, highstated, its minion's
    key accepted) and none may run as a primary: then the cluster is not
    lost, and this refuses before changing anything. The restored server is
    the preferred primary unless `node` names another; what its data
    directory held is kept beside it. #}
{%- from 'orch/steps.jinja' import step, refuse, rejoin, resume_airflow with context %}
{%- set plan = salt['saltutil.runner']('airflow_ha.disaster_plan', node=pillar.get('node')) %}
{%- if plan is not mapping %}
{{ raise('the pre-flight failed: ' ~ plan) }}
{%- endif %}
{%- set run = namespace(step=0) %}
{%- if plan.refused %}
{{ refuse(plan.refused) }}
{%- else %}
{{ step(run, 'stop PostgreSQL on every database server', 'pg_stop', nodes=[plan.node] + plan.others) }}
{{ step(run, 'record ' ~ plan.node ~ ' as the primary', 'record_primary', node=plan.node, reason='orch.disaster_recovery: restored from the backups', down=plan.down) }}
{{ step(run, 'restore PostgreSQL on ' ~ plan.node ~ ' from the repository, the primary again', 'pg_restore_primary', node=plan.node, time=pillar.get('time'), restore_point=pillar.get('restore_point'), backup_set=pillar.get('backup_set')) }}
{{ step(run, 'make Redis on ' ~ plan.node ~ ' the master', 'redis_switch', node=plan.node, old_master=plan.others[0], planned=false, down=plan.others) }}
{%-   for other in plan.others %}
{{ rejoin(run, other, plan.node) }}
{%-   endfor %}
{{ resume_airflow(run, plan.down) }}
{{ step(run, 'verify the cluster', 'verify', down=plan.down) }}
{%- endif %}
