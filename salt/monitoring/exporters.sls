{#- On every node, while the pillar has a monitoring node: the node
    exporter, on the node's cluster address, with the systemd collector for
    the platform's units (their state and restarts: the seed's process
    checks) and the textfile collector. A database server's minion writes
    its replication state there every few seconds (ha_metrics.write). #}
{%- from 'monitoring/map.jinja' import monitoring, endpoint %}
{%- from 'monitoring/macros.jinja' import arguments, service %}
{%- set exporter = monitoring.components.node_exporter %}
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
