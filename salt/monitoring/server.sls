{#- The monitoring node (role monitoring): Prometheus, scraping every node
    of the pillar, with the platform's alert rules; Alertmanager, sending to
    the pillar's receivers; the blackbox exporter, probing Airflow's health
    and Flower through the load balancer. All listen on the node's cluster
    address only. The StatsD bridge receives Airflow's metrics and serves
    them to Prometheus. Each file is checked by its own tool (promtool, amtool,
    the blackbox exporter) before it replaces the one in place; Prometheus reloads a changed
    configuration or rule file, and restarts for changed arguments. #}
{%- from 'monitoring/map.jinja' import monitoring, endpoint %}
{%- from 'haproxy/map.jinja' import haproxy %}
{%- from 'monitoring/macros.jinja' import arguments, service %}
{%- set prometheus_address = endpoint(monitoring.address, monitoring.ports.prometheus) %}
{%- set alertmanager_address = endpoint(monitoring.address, monitoring.ports.alertmanager) %}
{%- set blackbox_address = endpoint(monitoring.address, monitoring.ports.blackbox) %}
monitoring-server-packages:
  pkg.installed:
    - pkgs:
      - {{ monitoring.components.prometheus.package }}
      - {{ monitoring.components.alertmanager.package }}
      - {{ monitoring.components.blackbox.package }}
    - install_recommends: false

monitoring-alert-rules:
  file.managed:
    - name: {{ monitoring.config_dir }}/airflow_ha_rules.yml
    - source: salt://monitoring/files/alert_rules.yml.jinja
    - template: jinja
    - context:
        alerts: {{ monitoring.alerts | json }}
        expected: {{ monitoring.expected | json }}
        broker_backend: {{ haproxy.broker_backend | json }}
    - mode: '0644'
    - check_cmd: promtool check rules
    - require:
      - pkg: monitoring-server-packages

{#- Flower's password, for its /metrics: root and the prometheus group read
    it; Salt shows no diff of it. #}
monitoring-flower-password:
  file.managed:
    - name: {{ monitoring.flower_password_file }}
    - source: salt://monitoring/files/flower.password.jinja
    - template: jinja
    - user: root
    - group: {{ monitoring.os_group }}
    - mode: '0640'
    - show_changes: false
    - require:
      - pkg: monitoring-server-packages

monitoring-prometheus-config:
  file.managed:
    - name: {{ monitoring.config_dir }}/prometheus.yml
    - source: salt://monitoring/files/prometheus.yml.jinja
    - template: jinja
    - context:
        monitoring: {{ monitoring | json }}
        alertmanager_address: {{ alertmanager_address | json }}
        blackbox_address: {{ blackbox_address | json }}
        rules_file: {{ monitoring.config_dir }}/airflow_ha_rules.yml
    - mode: '0644'
    - check_cmd: promtool check config
    - require:
      - file: monitoring-alert-rules
      - file: monitoring-flower-password

{{ arguments('monitoring-prometheus-arguments', monitoring.components.prometheus, [
     '--config.file=' ~ monitoring.config_dir ~ '/prometheus.yml',
     '--storage.tsdb.path=' ~ monitoring.components.prometheus.data_dir,
     '--web.listen-address=' ~ prometheus_address,
     '--storage.tsdb.retention.time=' ~ monitoring.retention,
     '--web.console.templates=' ~ monitoring.config_dir ~ '/consoles',
     '--web.console.libraries=' ~ monitoring.config_dir ~ '/console_libraries']) }}
    - require:
      - pkg: monitoring-server-packages

{#- The overview page (/consoles/airflow.html; through the load balancer,
    at https://BALANCER:9443/): the seed's checklist at a glance. #}
monitoring-overview-page:
  file.managed:
    - name: {{ monitoring.config_dir }}/consoles/airflow.html
    - source: salt://monitoring/files/consoles/airflow.html
    - makedirs: true
    - mode: '0644'
    - require:
      - pkg: monitoring-server-packages

{{ service('monitoring-prometheus-service', monitoring.components.prometheus.service,
           ['monitoring-prometheus-arguments']) }}

monitoring-prometheus-reload:
  service.running:
    - name: {{ monitoring.components.prometheus.service }}
    - reload: true
    - watch:
      - file: monitoring-prometheus-config
      - file: monitoring-alert-rules
    - require:
      - service: monitoring-prometheus-service

{#- Receivers may hold credentials (an SMTP password, a webhook token):
    only root and the prometheus group read the file, and Salt shows no
    diff of it. #}
monitoring-alertmanager-config:
  file.managed:
    - name: {{ monitoring.config_dir }}/alertmanager.yml
    - contents: {{ monitoring.alertmanager | yaml(False) | json }}
    - user: root
    - group: {{ monitoring.os_group }}
    - mode: '0640'
    - show_changes: false
    - check_cmd: amtool check-config
    - require:
      - pkg: monitoring-server-packages

{#- No peers: one Alertmanager, its cluster port closed. #}
{{ arguments('monitoring-alertmanager-arguments', monitoring.components.alertmanager, [
     '--config.file=' ~ monitoring.config_dir ~ '/alertmanager.yml',
     '--storage.path=' ~ monitoring.components.alertmanager.data_dir,
     '--web.listen-address=' ~ alertmanager_address,
     '--cluster.listen-address=']) }}
    - require:
      - pkg: monitoring-server-packages

{{ service('monitoring-alertmanager-service', monitoring.components.alertmanager.service,
           ['monitoring-alertmanager-arguments', 'monitoring-alertmanager-config']) }}

monitoring-blackbox-config:
  file.managed:
    - name: {{ monitoring.config_dir }}/blackbox.yml
    - source: salt://monitoring/files/blackbox.yml.jinja
    - template: jinja
    - context:
        probe_tls: {{ monitoring.probe_tls | json }}
    - mode: '0644'
    - check_cmd: {{ monitoring.components.blackbox.config_check }}
    - require:
      - pkg: monitoring-server-packages

{{ arguments('monitoring-blackbox-arguments', monitoring.components.blackbox, [
     '--config.file=' ~ monitoring.config_dir ~ '/blackbox.yml',
     '--web.listen-address=' ~ blackbox_address]) }}
    - require:
      - pkg: monitoring-server-packages

{{ service('monitoring-blackbox-service', monitoring.components.blackbox.service,
           ['monitoring-blackbox-arguments', 'monitoring-blackbox-config']) }}

{#- Airflow's StatsD metrics (airflow.cfg [metrics], on every Airflow node),
    named by the mapping file; each series names the node that sent it. #}
{%- set bridge = monitoring.statsd_bridge %}
{%- set node_names = {} %}
{%- for id, node in monitoring.nodes | dictsort %}
{%-   do node_names.update({node.address: id}) %}
{%- endfor %}
monitoring-statsd-bridge-package:
  pkg.installed:
    - name: {{ monitoring.python_yaml_package }}
    - install_recommends: false

monitoring-statsd-bridge-program:
  file.managed:
    - name: {{ bridge.program }}
    - source: salt://monitoring/files/statsd_bridge.py
    - mode: '0755'

monitoring-statsd-mapping:
  file.managed:
    - name: {{ monitoring.config_dir }}/airflow_statsd_mapping.yml
    - source: salt://monitoring/files/airflow_statsd_mapping.yml
    - mode: '0644'
    - require:
      - pkg: monitoring-server-packages

monitoring-statsd-node-names:
  file.managed:
    - name: {{ monitoring.config_dir }}/airflow_statsd_nodes.yml
    - contents: {{ node_names | yaml(False) | json }}
    - mode: '0644'
    - require:
      - pkg: monitoring-server-packages

monitoring-statsd-bridge-unit:
  file.managed:
    - name: /etc/systemd/system/{{ bridge.service }}.service
    - source: salt://monitoring/files/statsd_bridge.service.jinja
    - template: jinja
    - context:
        bridge: {{ bridge | json }}
        user: {{ monitoring.os_group }}
        statsd_address: {{ endpoint(monitoring.address, monitoring.ports.statsd) | json }}
        web_address: {{ endpoint(monitoring.address, monitoring.ports.statsd_bridge) | json }}
        mapping: {{ monitoring.config_dir }}/airflow_statsd_mapping.yml
        node_names: {{ monitoring.config_dir }}/airflow_statsd_nodes.yml
    - mode: '0644'
    - require:
      - pkg: monitoring-statsd-bridge-package

{{ service('monitoring-statsd-bridge-service', bridge.service,
           ['monitoring-statsd-bridge-program', 'monitoring-statsd-mapping',
            'monitoring-statsd-node-names', 'monitoring-statsd-bridge-unit']) }}
