{#- On every node, while the pillar has a monitoring node: the node
    exporter, on the node's cluster address, with the systemd collector for
    the platform's units (their state and restarts: the seed's process
    checks) and the textfile collector. A database server's minion writes
    its replication state there every few seconds (ha_metrics.write). The
    PostgreSQL exporter (peer authentication on the local socket: a warm
    standby answers no SQL, so only the primary's pg_stat_replication and
    slots come from it) and the Redis exporter run beside their servers. #}
{%- from 'monitoring/map.jinja' import monitoring, endpoint %}
{%- from 'monitoring/macros.jinja' import arguments, service %}
{%- set exporter = monitoring.components.node_exporter %}
{%- set roles = monitoring.nodes[grains.id].roles %}
monitoring-node-exporter-package:
  pkg.installed:
    - name: {{ exporter.package }}
    - install_recommends: false

{{ arguments('monitoring-node-exporter-arguments', exporter, [
     '--web.listen-address=' ~ endpoint(monitoring.address, monitoring.ports.node_exporter),
     '--collector.systemd',
     '--collector.systemd.unit-include=' ~ monitoring.units,
     '--collector.systemd.enable-restarts-metrics',
     '--collector.textfile.directory=' ~ monitoring.textfile_dir]) }}
    - require:
      - pkg: monitoring-node-exporter-package

{{ service('monitoring-node-exporter-service', exporter.service,
           ['monitoring-node-exporter-arguments']) }}
{%- if monitoring.database_server %}

monitoring-replication-metrics:
  schedule.present:
    - name: airflow-ha-metrics
    - function: ha_metrics.write
    - seconds: {{ monitoring.metrics_interval }}
    - maxrunning: 1
    - return_job: false
    - run_on_start: true
    - require:
      - pkg: monitoring-node-exporter-package
{%- endif %}
{%- if 'postgresql' in roles %}
{%-   from 'postgresql/map.jinja' import postgresql %}
{%-   set postgres_exporter = monitoring.components.postgres_exporter %}

monitoring-postgres-exporter-package:
  pkg.installed:
    - name: {{ postgres_exporter.package }}
    - install_recommends: false

{{ arguments('monitoring-postgres-exporter-arguments', postgres_exporter, [
     '--web.listen-address=' ~ endpoint(monitoring.address, monitoring.ports.postgres_exporter)],
   {'DATA_SOURCE_NAME': 'user=' ~ monitoring.postgres_exporter_role ~ ' host=' ~ postgresql.socket_dir
                        ~ ' port=' ~ postgresql.port ~ ' dbname=postgres sslmode=disable'}) }}
    - require:
      - pkg: monitoring-postgres-exporter-package

{{ service('monitoring-postgres-exporter-service', postgres_exporter.service,
           ['monitoring-postgres-exporter-arguments']) }}
{%- endif %}
{%- if 'redis' in roles %}
{%-   from 'redis/map.jinja' import redis %}
{%-   set redis_exporter = monitoring.components.redis_exporter %}

monitoring-redis-exporter-package:
  pkg.installed:
    - name: {{ redis_exporter.package }}
    - install_recommends: false

{#- Holds the Redis password, which the template reads from the pillar
    (so it is not among the state's arguments): readable by root and the
    exporter's group only, and Salt shows no diff of it. #}
monitoring-redis-exporter-arguments:
  file.managed:
    - name: {{ redis_exporter.environment_file }}
    - source: salt://monitoring/files/redis_exporter.env.jinja
    - template: jinja
    - context:
        variable: {{ redis_exporter.arguments_variable }}
        args: {{ ['--web.listen-address=' ~ endpoint(monitoring.address, monitoring.ports.redis_exporter),
                  '--redis.addr=redis://' ~ endpoint(monitoring.address, redis.port)] | join(' ') | json }}
    - user: root
    - group: {{ monitoring.os_group }}
    - mode: '0640'
    - show_changes: false
    - require:
      - pkg: monitoring-redis-exporter-package

{{ service('monitoring-redis-exporter-service', redis_exporter.service,
           ['monitoring-redis-exporter-arguments']) }}
{%- endif %}
