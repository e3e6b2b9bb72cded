{#- Runbook: move every Airflow node to the pillar's airflow:version when
    that changes the release line (2.10 to 3.x; README: Upgrading Airflow).
    Set the version in the pillar first, then:

      salt-run state.orchestrate orch.upgrade test=True   # the plan only
      salt-run state.orchestrate orch.upgrade

    While the old version still serves: the DAGs are checked against
    Airflow 3 (ruff's AIR3 rules, on the master), the new version is
    installed beside the old one on every node and its configuration
    checked (`airflow config update`), and the database is dumped on the
    primary (what orch.upgrade_rollback restores). Then Airflow is down:
    every process stops, `airflow db migrate` runs once, from the node that
    migrates the database, and every node's highstate starts the new
    version. The standby follows by streaming. A run that failed is run
    again: every step is safe to repeat, and the dump taken before anything
    was migrated is kept. #}
{%- from 'orch/steps.jinja' import step, refuse with context %}
{%- set plan = salt['saltutil.runner']('airflow_ha.upgrade_plan') %}
{%- if plan is not mapping %}
{{ raise('the pre-flight failed: ' ~ plan) }}
{%- endif %}
{%- set run = namespace(step=0) %}
{%- if plan.refused %}
{{ refuse(plan.refused) }}
{%- elif plan.mode == 'upgrade' %}
{%-   if plan.check_dags %}
{{ step(run, 'check the DAGs against Airflow 3', 'upgrade_check_dags') }}
{%-   endif %}
{{ step(run, 'install Airflow ' ~ plan.to ~ ' beside ' ~ plan['from'] ~ ' and check its configuration', 'upgrade_install', version=plan.to) }}
{%-   if plan.take_backup %}
{{ step(run, 'dump the Airflow database on ' ~ plan.primary, 'upgrade_backup', node=plan.primary, version=plan['from']) }}
{%-   endif %}
{{ step(run, 'stop every Airflow process', 'upgrade_stop') }}
{{ step(run, 'migrate the database to ' ~ plan.to ~ ' from ' ~ plan.migrator, 'upgrade_migrate', node=plan.migrator, version=plan.to) }}
{{ step(run, 'every node runs Airflow ' ~ plan.to, 'upgrade_start') }}
{{ step(run, 'verify the cluster', 'verify') }}
{%- else %}
{{ step(run, 'verify the cluster', 'verify') }}
{%- endif %}
