{#- airflow.cfg holds the secrets (database and broker passwords, Fernet and
    webserver keys): readable by the service account only, and never shown
    in the change output. #}
{%- from 'airflow/map.jinja' import airflow %}
include:
  - airflow.install

airflow-environment-file:
  file.managed:
    - name: {{ airflow.environment_file }}
    - mode: '0644'
    - contents: |
        # Managed by Salt (salt/airflow): read by every Airflow unit.
        AIRFLOW_HOME={{ airflow.home }}
        PATH={{ airflow.venv }}/bin:/usr/local/bin:/usr/bin:/bin

airflow-config:
  file.managed:
    - name: {{ airflow.home }}/airflow.cfg
    - source: salt://airflow/files/airflow.cfg.jinja
    - template: jinja
    - context:
        airflow: {{ airflow | json }}
    - user: {{ airflow.user }}
    - group: {{ airflow.user }}
    - mode: '0600'
    - show_changes: false
    - require:
      - cmd: airflow-venv
