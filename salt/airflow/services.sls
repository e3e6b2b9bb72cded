{#- One systemd unit per component the node's roles ask for (map.jinja's
    units). No unit depends on a service of another node: they restart
    until the database and the broker answer. The first start waits
    (bounded) for the database to be migrated, which another node may be
    doing. A single component (Airflow 3's DAG processor) runs where the
    primaries are: stopped and disabled on the other nodes of its role. #}
{%- from 'airflow/map.jinja' import airflow %}
include:
  - airflow.config
  - airflow.dags
{%- if airflow.migrates_database %}
  - airflow.database
{%- endif %}

{%- if airflow.units %}

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

{%- for component in airflow.units + airflow.units_elsewhere %}

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
{%-   if component in airflow.units %}

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
{%-     if component.name == 'flower' %}
      - file: airflow-flower-environment-file
{%-     endif %}
      - file: airflow-venv-current
{%-   else %}

# Installed, so that a failover starts it here; runs where the primaries are.
airflow-{{ component.name }}:
  service.dead:
    - name: airflow-{{ component.name }}
    - enable: false
    - require:
      - module: airflow-{{ component.name }}-unit
{%-   endif %}
{%- endfor %}

{%- for name in airflow.units_retired %}

# A unit of another release line (left by an upgrade or a rollback).
airflow-{{ name }}-retired:
  service.dead:
    - name: airflow-{{ name }}
    - enable: false
  file.absent:
    - name: /etc/systemd/system/airflow-{{ name }}.service
    - require:
      - service: airflow-{{ name }}-retired
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: airflow-{{ name }}-retired
{%- endfor %}
