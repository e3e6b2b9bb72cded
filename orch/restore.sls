{#- Runbook: restore the Airflow database into a scratch directory, to see
    what it held at a point in time (README: Disaster recovery). The running
    pair is not touched.

      salt-run state.orchestrate orch.restore                                       # the latest
      salt-run state.orchestrate orch.restore pillar='{"time": "2026-12-02 04:31:00+00:00"}'
      salt-run state.orchestrate orch.restore pillar='{"restore_point": "before-upgrade"}'
      ... pillar='{"time": "...", "node": "airflow-server1", "port": 5499, "backup_set": LABEL}'

    The copy is restored on the standby (or the pillar's node) from the
    repository, started on its own port (pgbackrest:restore:port, unix
    socket only) and promoted at the target; the step prints what it holds,
    how to look into it and how to remove it. #}
{%- from 'orch/steps.jinja' import step with context %}
{%- set run = namespace(step=0) %}
{{ step(run, 'restore into a scratch directory', 'restore', time=pillar.get('time'), restore_point=pillar.get('restore_point'), backup_set=pillar.get('backup_set'), node=pillar.get('node'), port=pillar.get('port')) }}
