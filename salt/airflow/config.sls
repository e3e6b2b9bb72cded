{#- airflow.cfg holds the secrets (database and broker passwords, Fernet and
    webserver keys): readable by the service account only, and never shown
    in the change output. #}
{%- from 'airflow/map.jinja' import airflow %}
{%- from 'escape.jinja' import systemd_env %}
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
{%- if airflow.release_line >= 3 and airflow.balancers %}
        # The API server trusts X-Forwarded-* from the load balancers only.
        FORWARDED_ALLOW_IPS={{ airflow.balancers | join(',') }}
{%- endif %}

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

{%- if 'airflow-flower' in airflow.roles %}

# Flower's basic authentication, for the Flower unit only. Flower reads it
# from its environment as it is; in airflow.cfg ([celery] flower_basic_auth)
# Airflow would expand a $VARIABLE in the password. systemd reads the file
# as root: nobody else needs to.
airflow-flower-environment-file:
  file.managed:
    - name: {{ airflow.flower_environment_file }}
    - mode: '0600'
    - show_changes: false
    - contents: |
        # Managed by Salt (salt/airflow): read by the airflow-flower unit.
        FLOWER_BASIC_AUTH={{ systemd_env(airflow.flower.username ~ ':' ~ airflow.flower.password) }}
{%- endif %}
