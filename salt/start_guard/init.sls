{#- The start guard shared by PostgreSQL and Redis (see unit.jinja): one
    program, and beside it the core's rules (salt://_utils/ha_core) it
    imports; and the peer report it asks the other database nodes for (a
    socket-activated service on the cluster address).
    Without the core the program exits non-zero, and systemd starts neither
    server: the guard fails closed. #}
{%- from 'start_guard/map.jinja' import start_guard %}
{%- from 'postgresql/map.jinja' import postgresql %}
{%- from 'redis/map.jinja' import redis %}
{%- set roles = salt['pillar.get']('cluster:nodes:' ~ grains.id ~ ':roles', []) %}
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

start-guard-peer-key:
  file.managed:
    - name: {{ start_guard.key_file }}
    - contents: {{ salt['hashutil.sha256_digest']('airflow-ha peer key: ' ~ postgresql.replication_password) | json }}
    - makedirs: true
    - mode: '0600'
    - show_changes: false

{%- set report = [start_guard.program, 'report'] + start_guard.common_arguments %}
{%- if 'postgresql' in roles %}
{%-   do report.extend(['--data-dir', postgresql.data_dir]) %}
{%- endif %}
{%- if 'redis' in roles %}
{%-   do report.extend(['--role-file', redis.role_file]) %}
{%- endif %}
start-guard-peer-report-service:
  file.managed:
    - name: /etc/systemd/system/airflow-ha-peer-report@.service
    - contents: |
        # Managed by Salt (salt/start_guard): one signed report per connection.
        [Unit]
        Description=Peer report of the highly available pair, for a start guard
        [Service]
        ExecStart=/usr/bin/python3 {{ report | join(' ') }}
        StandardInput=socket
        StandardOutput=socket
        StandardError=journal
    - require:
      - file: start-guard-program
      - file: start-guard-peer-key

start-guard-peer-report-socket:
  file.managed:
    - name: /etc/systemd/system/airflow-ha-peer-report.socket
    - contents: |
        # Managed by Salt (salt/start_guard).
        [Unit]
        Description=Peer report of the highly available pair (airflow-ha start guards)
        [Socket]
        ListenStream={{ start_guard.address }}:{{ start_guard.peer_port }}
        FreeBind=yes
        Accept=yes
        [Install]
        WantedBy=sockets.target
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: start-guard-peer-report-service
      - file: start-guard-peer-report-socket
  service.running:
    - name: airflow-ha-peer-report.socket
    - enable: true
    - watch:
      - file: start-guard-peer-report-socket
