{#- One systemd unit per component the node's roles ask for. No unit depends
    on a service of another node: they restart until the database and the
    broker answer. The first start waits (bounded) for the database to be
    migrated, which another node may be doing. #}
{%- from 'airflow/map.jinja' import airflow %}
{%- set components = airflow.components | dictsort | selectattr('0', 'in', airflow.roles) | list %}
include:
  - airflow.config
  - airflow.dags
{%- if airflow.migrates_database %}
  - airflow.database
{%- endif %}

{%- if components %}

# Fails at once while the database does not answer yet: retried, bounded.
airflow-database-ready:
  cmd.run:
    - name: {{ airflow.venv }}/bin/airflow db check-migrations --migration-wait-timeout 60
    - unless: {{ airflow.venv }}/bin/airflow db check-migrations --migration-wait-timeout 1
    - runas: {{ airflow.user }}
    - env:
        AIRFLOW_HOME: {{ airflow.home }}
    - retry:
        attempts: 10
        interval: 10
    - require:
      - file: airflow-config
{%- if airflow.migrates_database %}
      - cmd: airflow-db-migrate
{%- endif %}
{%- endif %}

{%- for role, component in components %}

airflow-{{ component.name }}-unit:
  file.managed:
    - name: /etc/systemd/system/airflow-{{ component.name }}.service
    - source: salt://airflow/files/airflow.service.jinja
    - template: jinja
    - context:
        component: {{ component | json }}
        airflow: {{ {'user': airflow.user, 'home': airflow.home, 'venv': airflow.venv,
                     'environment_file': airflow.environment_file,
                     'flower_environment_file': airflow.flower_environment_file} | json }}
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: airflow-{{ component.name }}-unit

airflow-{{ component.name }}:
  service.running:
    - name: airflow-{{ component.name }}
    - enable: true
    - require:
      - cmd: airflow-database-ready
      - module: airflow-{{ component.name }}-unit
    - watch:
      - file: airflow-{{ component.name }}-unit
      - file: airflow-config
      - file: airflow-environment-file
{%- if component.name == 'flower' %}
      - file: airflow-flower-environment-file
{%- endif %}
      - cmd: airflow-package
{%- endfor %}
