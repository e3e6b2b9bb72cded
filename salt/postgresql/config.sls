{#- Our settings live in a file of their own, included by postgresql.conf,
    so that package updates of postgresql.conf and ours never collide. #}
{%- from 'postgresql/map.jinja' import postgresql %}
{%- from 'monitoring/map.jinja' import monitoring %}
{%- set node = postgresql.nodes[grains.id] %}
include:
  - postgresql.install

postgresql-settings:
  file.managed:
    - name: {{ postgresql.conf_dir }}/airflow-ha.conf
    - source: salt://postgresql/files/airflow-ha.conf.jinja
    - template: jinja
    - context:
        settings: {{ postgresql.settings | json }}
        listen_addresses: localhost,{{ node.address }}
        port: {{ postgresql.port }}
        hot_standby: {{ 'on' if postgresql.hot_standby else 'off' }}
    - user: {{ postgresql.os_user }}
    - group: {{ postgresql.os_user }}
    - mode: '0640'
    - require:
      - pkg: postgresql-packages

postgresql-settings-included:
  file.append:
    - name: {{ postgresql.conf_dir }}/postgresql.conf
    - text: "include = 'airflow-ha.conf'  # settings managed by Salt"
    - require:
      - file: postgresql-settings

postgresql-hba:
  file.managed:
    - name: {{ postgresql.conf_dir }}/pg_hba.conf
    - source: salt://postgresql/files/pg_hba.conf.jinja
    - template: jinja
    - context:
        os_user: {{ postgresql.os_user }}
        replication_user: {{ postgresql.replication_user }}
        database: {{ postgresql.database }}
        owner: {{ postgresql.owner }}
        database_peers: {{ postgresql.database_nodes | reject('equalto', grains.id) | list | json }}
        airflow_clients: {{ postgresql.airflow_nodes | json }}
        monitoring_role: {{ (monitoring.postgres_exporter_role if monitoring.server else none) | json }}
        nodes: {{ postgresql.nodes | json }}
    - user: {{ postgresql.os_user }}
    - group: {{ postgresql.os_user }}
    - mode: '0640'
    - require:
      - pkg: postgresql-packages
