{#- Runbook: go back to the Airflow version an upgrade started from (README:
    Upgrading Airflow). Set airflow:version back to it in the pillar, then:

      salt-run state.orchestrate orch.upgrade_rollback test=True   # the plan only
      salt-run state.orchestrate orch.upgrade_rollback

    Every Airflow process stops, the database is restored on the primary
    from the dump orch.upgrade took before it migrated (every DAG run since
    is lost), and every node's highstate starts the old version again from
    its virtual environment, which the upgrade kept. Run again after a
    failure; once every node runs the version and the database matches
    it, a run only verifies. #}
{%- from 'orch/steps.jinja' import step, refuse with context %}
{%- set plan = salt['saltutil.runner']('airflow_ha.upgrade_plan', rollback=True) %}
{%- if plan is not mapping %}
{{ raise('the pre-flight failed: ' ~ plan) }}
{%- endif %}
{%- set run = namespace(step=0) %}
{%- if plan.refused %}
{{ refuse(plan.refused) }}
{%- elif plan.mode == 'rollback' %}
{{ step(run, 'stop every Airflow process', 'upgrade_stop') }}
{{ step(run, 'restore the database on ' ~ plan.primary ~ ' from ' ~ plan.backup, 'upgrade_restore', node=plan.primary, backup=plan.backup) }}
{{ step(run, 'every node runs Airflow ' ~ plan.to, 'upgrade_start') }}
{{ step(run, 'verify the cluster', 'verify') }}
{%- else %}
{{ step(run, 'verify the cluster', 'verify') }}
{%- endif %}
