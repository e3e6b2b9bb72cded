{#- Runbook: bring the preferred primary (cluster:primary) back.

      salt-run state.orchestrate orch.failback                                  # rejoin, switch back
      salt-run state.orchestrate orch.failback pillar='{"switch_back": false}'  # rejoin only
      salt-run state.orchestrate orch.failback test=True                        # the plan only
      salt-run state.orchestrate orch.failback pillar='{"discard": "X/Y-X/Y"}'  # consent to a loss

    The preferred primary first rejoins the current primary as a standby
    (nothing to copy after a planned switch, pg_rewind after a crash, a base
    backup when rewinding is impossible) and its Redis follows; then the
    roles switch back with the planned procedure, losing nothing. When the
    preferred primary is the primary already, a database node that does not
    stream from it (an earlier failback failed to rejoin it) is rejoined. A rejoin
    that would discard WAL the preferred primary holds past the fork (what
    it committed after the other was promoted) is refused until `discard`
    names that range; the discarded WAL is kept beside its data directory. #}
{%- from 'orch/steps.jinja' import step, refuse, rejoin, planned_switch, resume_airflow with context %}
{%- set plan = salt['saltutil.runner']('airflow_ha.plan', action='failback',
                                       switch_back=salt['pillar.get']('switch_back', True),
                                       discard=salt['pillar.get']('discard')) %}
{%- if plan is not mapping %}
{{ raise('the pre-flight failed: ' ~ plan) }}
{%- endif %}
{%- set run = namespace(step=0) %}
{%- if plan.refused %}
{{ refuse(plan.refused) }}
{%- elif plan.mode == 'nothing' %}
{{ step(run, 'verify the cluster', 'verify', down=plan.down) }}
{%- else %}
{{ rejoin(run, plan.rejoin or plan.new, plan.old, plan.discard) }}
{%-   if plan.mode == 'planned' %}
{{ planned_switch(run, plan.old, plan.new, 'orch.failback', plan.down) }}
{%-   else %}
{#-     An earlier failback may have stopped after recording the primary. #}
{{ resume_airflow(run, plan.down) }}
{{ step(run, 'verify the cluster', 'verify', down=plan.down) }}
{%-   endif %}
{%- endif %}
