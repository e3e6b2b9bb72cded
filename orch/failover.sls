{#- Runbook: move the PostgreSQL primary and the Redis master to the other
    server, and Airflow with them.

      salt-run state.orchestrate orch.failover                             # planned
      salt-run state.orchestrate orch.failover pillar='{"force": true}'    # primary down
      salt-run state.orchestrate orch.failover test=True                   # the plan only

    The pre-flight inspects both servers and decides:
    - planned (the primary runs): nothing committed or acknowledged is lost;
      the old primary ends as a standby of the new one.
    - resume (an earlier run shut the primary down cleanly, or promoted the
      standby, then failed): the planned steps run again, each skipping what
      is done, as long as nothing the old primary holds would be lost.
    - finish (an earlier run recorded the new primary, then stopped before
      the old one streamed from it): Airflow follows, the old primary
      rejoins (unless that run fenced it: orch.failback rejoins it), verify.
    - unplanned (the primary is down): refused unless forced, saying what is
      at risk. Forced, the old primary is fenced before anything is
      promoted: by its minion when it answers, else by the fence agent
      (pillar failover:fence), else only when the operator names it:
      pillar='{"force": true, "fenced": "NODE"}'. A standby that still
      streams from it refuses that word. #}
{%- from 'orch/steps.jinja' import step, refuse, rejoin, planned_switch, resume_airflow with context %}
{%- set plan = salt['saltutil.runner']('airflow_ha.plan', action='failover',
                                       force=salt['pillar.get']('force', False),
                                       max_lag_bytes=salt['pillar.get']('max_lag_bytes'),
                                       max_redis_lag_bytes=salt['pillar.get']('max_redis_lag_bytes'),
                                       fenced=salt['pillar.get']('fenced')) %}
{%- if plan is not mapping %}
{{ raise('the pre-flight failed: ' ~ plan) }}
{%- endif %}
{%- set run = namespace(step=0) %}
{%- if plan.refused %}
{{ refuse(plan.refused) }}
{%- elif plan.mode == 'finish' %}
{{ resume_airflow(run, plan.down) }}
{%-   if plan.rejoin %}
{{ rejoin(run, plan.rejoin, plan.old) }}
{%-   endif %}
{{ step(run, 'verify the cluster', 'verify', down=plan.down) }}
{%- elif plan.mode in ('planned', 'resume') %}
{{ planned_switch(run, plan.old, plan.new, 'orch.failover', plan.down) }}
{%- else %}
{#-   The schedulers stop while the old primary is fenced: one waiting on a
      connection to a server that is off takes seconds to. #}
{{ step(run, 'ask the Airflow schedulers to stop', 'ask_schedulers_to_stop', down=plan.down) }}
{{ step(run, 'fence ' ~ plan.old ~ ' (' ~ plan.fence ~ ') before anything is promoted', 'fence_old_primary', node=plan.old, primary=plan.new, method=plan.fence) }}
{{ step(run, 'check that the Airflow schedulers stopped', 'stop_schedulers', down=plan.down) }}
{{ step(run, 'promote PostgreSQL on ' ~ plan.new ~ ' (forced)', 'pg_promote', node=plan.new, old_primary=plan.old, planned=false) }}
{{ step(run, 'make Redis on ' ~ plan.new ~ ' the master', 'redis_switch', node=plan.new, old_master=plan.old, planned=false, down=plan.down) }}
{{ step(run, 'record ' ~ plan.new ~ ' as the primary', 'record_primary', node=plan.new, reason='orch.failover (unplanned, forced): ' ~ plan.old ~ ' fenced ' ~ plan.fence, fenced=[plan.old], down=plan.down) }}
{{ resume_airflow(run, plan.down) }}
{{ step(run, 'verify the cluster', 'verify', down=plan.down) }}
{%- endif %}
