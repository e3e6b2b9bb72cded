{#- The default roles (Admin, Viewer, User, Op, Public), the superuser and
    the pillar's users with their roles and passwords, kept in step with the
    pillar (users made by hand in the UI are left alone). Passwords reach the
    script on its standard input: no command line shows them. #}
{%- from 'airflow/map.jinja' import airflow %}
{%- set users = {airflow.admin.username: dict(airflow.admin, roles=['Admin'])} %}
{%- do users.update(airflow.users) %}
include:
  - airflow.database

airflow-users:
  cmd.run:
    - name: {{ airflow.venv }}/bin/python {{ airflow.home }}/sync_users.py
    - stdin: {{ users | json | json }}
    # As it is: otherwise Salt turns each backslash-n in it (a password's
    # backslash, JSON-escaped, then n) into a newline.
    - stdin_raw_newlines: true
    - stateful: true
    - runas: {{ airflow.user }}
    - env:
        AIRFLOW_HOME: {{ airflow.home }}
    - require:
      - cmd: airflow-db-migrate
      - file: airflow-users-script

airflow-users-script:
  file.managed:
    - name: {{ airflow.home }}/sync_users.py
    - source: salt://airflow/files/sync_users.py
    - user: {{ airflow.user }}
    - group: {{ airflow.user }}
    - mode: '0644'
