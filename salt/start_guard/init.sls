{#- The start guard shared by PostgreSQL and Redis (see unit.jinja): one
    program, and beside it the core's rules (salt://_utils/ha_core) it
    imports. Without the core the program exits non-zero, and systemd
    starts neither server: the guard fails closed. #}
{%- import_yaml 'start_guard/defaults.yaml' as defaults %}
{%- set start_guard = defaults.start_guard %}
start-guard-core:
  file.recurse:
    - name: {{ start_guard.core_dir }}/ha_core
    - source: salt://_utils/ha_core
    - include_pat: '*.py'
    - clean: true
    - dir_mode: '0755'
    - file_mode: '0644'

start-guard-program:
  file.managed:
    - name: {{ start_guard.program }}
    - source: salt://start_guard/files/airflow-ha-start-guard
    - mode: '0755'
    - require:
      - file: start-guard-core

{#- Before one program served both, each had its own. #}
start-guard-superseded:
  file.absent:
    - names:
      - /usr/local/sbin/postgresql-start-guard
      - /usr/local/sbin/redis-start-guard
