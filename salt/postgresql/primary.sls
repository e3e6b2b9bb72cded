{#- On the primary: the replication role, the Airflow database and its
    owner. Passwords go to psql on its standard input, never on a command
    line, and never into the change output. #}
{%- from 'postgresql/map.jinja' import postgresql %}
{%- from 'monitoring/map.jinja' import monitoring %}
include:
  - postgresql.service
{%- if monitoring.server %}

{#- The PostgreSQL exporter's login (salt/monitoring/exporters.sls): no
    password, only the local socket as the OS user of the same name (peer,
    pg_hba.conf). #}
postgresql-monitoring-role:
  postgres_user.present:
    - name: {{ monitoring.postgres_exporter_role }}
    - login: true
    - groups: pg_monitor
    - db_user: {{ postgresql.os_user }}
    - user: {{ postgresql.os_user }}
    - require:
      - service: postgresql-service
{%- endif %}

postgresql-replication-role:
  pg_role.present:
    - name: {{ postgresql.replication_user }}
    - password: {{ postgresql.replication_password | json }}
    - replication: true
    # Lets standbys read the primary's replication state, and pg_rewind run
    # against it without superuser rights.
    - member_of: [pg_monitor]
    - rewind_source: true
    - require:
      - service: postgresql-service

postgresql-airflow-owner:
  pg_role.present:
    - name: {{ postgresql.owner }}
    - password: {{ postgresql.airflow_password | json }}
    - require:
      - service: postgresql-service

postgresql-airflow-database:
  postgres_database.present:
    - name: {{ postgresql.database }}
    - owner: {{ postgresql.owner }}
    - db_user: {{ postgresql.os_user }}
    - user: {{ postgresql.os_user }}
    - require:
      - pg_role: postgresql-airflow-owner
