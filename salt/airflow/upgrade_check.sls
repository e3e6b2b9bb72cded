{#- orch.upgrade's configuration check, before anything stops: the new
    version's airflow.cfg, rendered beside the running one (in
    upgrade-check/ under AIRFLOW_HOME), for the new version's `airflow
    config update` to read. Readable by the service account only. #}
{%- from 'airflow/map.jinja' import airflow %}
airflow-upgrade-check-config:
  file.managed:
    - name: {{ airflow.home }}/upgrade-check/airflow.cfg
    - source: salt://airflow/files/airflow.cfg.jinja
    - template: jinja
    - context:
        airflow: {{ airflow | json }}
    - user: {{ airflow.user }}
    - group: {{ airflow.user }}
    - mode: '0600'
    - dir_mode: '0700'
    - makedirs: true
    - show_changes: false
