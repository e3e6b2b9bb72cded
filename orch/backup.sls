{#- Runbook: take a backup now (README: Disaster recovery).

      salt-run state.orchestrate orch.backup                                # incremental
      salt-run state.orchestrate orch.backup pillar='{"type": "full"}'      # full, diff or incr

    The node with the backup role takes it, then copies the Redis broker's
    data, as the scheduled backups do (a run waits for one already
    running); then pgBackRest's check proves that the primary's WAL reaches
    the archive. #}
{%- from 'orch/steps.jinja' import step with context %}
{%- set run = namespace(step=0) %}
{{ step(run, 'take a backup (' ~ pillar.get('type', 'incr') ~ '), then check the archive', 'backup', type=pillar.get('type', 'incr')) }}
