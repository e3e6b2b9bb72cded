{#- Airflow in a virtual environment, with one systemd unit per component
    the node's roles ask for. One node (the first with the
    airflow-scheduler role) migrates the database and keeps the users. #}
{%- from 'airflow/map.jinja' import airflow %}
include:
  - airflow.install
  - airflow.config
  - airflow.dags
{%- if airflow.migrates_database %}
  - airflow.database
  - airflow.users
{%- endif %}
  - airflow.services
