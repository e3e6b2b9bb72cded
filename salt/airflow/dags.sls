{#- The same DAG code on every Airflow node, from airflow:dags_source. #}
{%- from 'airflow/map.jinja' import airflow %}
airflow-dags:
  file.recurse:
    - name: {{ airflow.home }}/dags
    - source: {{ airflow.dags_source }}
    - user: {{ airflow.user }}
    - group: {{ airflow.user }}
    - file_mode: '0644'
    - dir_mode: '0755'
    - clean: true
    # Python's bytecode caches are the scheduler's, not stray files.
    - exclude_pat: E@__pycache__
    - include_empty: true
