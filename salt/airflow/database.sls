{#- `airflow db migrate` from this one node (the first scheduler), whenever
    the database is not at this version's head: after a version change, or
    on a fresh environment. The primary may still be coming up then: retry
    for a few minutes before failing with the last error. #}
{%- from 'airflow/map.jinja' import airflow %}
include:
  - airflow.config

airflow-db-migrate:
  cmd.run:
    - name: {{ airflow.venv }}/bin/airflow db migrate
    - unless: {{ airflow.venv }}/bin/airflow db check-migrations --migration-wait-timeout 1
    - runas: {{ airflow.user }}
    - env:
        AIRFLOW_HOME: {{ airflow.home }}
    - retry:
        attempts: 30
        interval: 10
    - require:
      - file: airflow-venv-current
      - file: airflow-config
