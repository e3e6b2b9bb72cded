{#- Runbook: rotate secrets, after an edit of the environment's secrets
    (pillar/<environment>/secrets.sls; the README's "Rotating secrets").

      salt-run state.orchestrate orch.rotate             # rotate
      salt-run state.orchestrate orch.rotate test=True   # the plan only

    One highstate on every node at once cannot order a rotation: a new
    password must be accepted before anything uses it. When Airflow's
    database password changes, the Celery workers finish their running
    tasks and stop first (a task cannot outlive the password it started
    with; queued tasks wait). Then PostgreSQL and
    Redis on the primary take the new passwords first (PostgreSQL replaces
    a role's password, and sessions already open, the standby's stream
    among them, stay; Redis accepts the new password besides the old one),
    then on the other database server; then every node's highstate hands
    the new secrets to Airflow, the start guards and HAProxy; then, when
    the pillar lists two Fernet keys, connections and variables are
    re-encrypted with the first; the old Redis password is retired last.
    Every step is safe to repeat: after a failure, fix its cause and run
    the same runbook again. #}
{%- from 'orch/steps.jinja' import step, refuse with context %}
{%- set plan = salt['saltutil.runner']('airflow_ha.rotation_plan') %}
{%- if plan is not mapping %}
{{ raise('the pre-flight failed: ' ~ plan) }}
{%- endif %}
{%- set run = namespace(step=0) %}
{%- if plan.refused %}
{{ refuse(plan.refused) }}
{%- else %}
{%-   if plan.drain %}
{{ step(run, 'stop the Celery workers, once their running tasks finish', 'drain_workers', down=plan.down) }}
{%-   endif %}
{%-   for node in plan.order %}
{{ step(run, 'PostgreSQL and Redis on ' ~ node ~ ' take the new passwords', 'secrets_accepted', node=node) }}
{%-   endfor %}
{{ step(run, 'every node takes the new secrets (highstate)', 'secrets_applied', down=plan.down) }}
{%-   if plan.fernet_keys > 1 %}
{{ step(run, 're-encrypt connections and variables with the new Fernet key', 'fernet_reencrypt') }}
{%-   endif %}
{{ step(run, 'retire the old Redis passwords', 'redis_retire_passwords', down=plan.down) }}
{{ step(run, 'verify the cluster', 'verify', down=plan.down) }}
{%- endif %}
