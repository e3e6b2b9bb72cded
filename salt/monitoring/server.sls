{#- The monitoring node (role monitoring): Prometheus, scraping every node
    of the pillar, with the platform's alert rules; Alertmanager, sending to
    the pillar's receivers; the blackbox exporter, probing Airflow's health
    and Flower through the load balancer. All listen on the node's cluster
    address only. Each file is checked by its own tool (promtool, amtool,
    the blackbox exporter) before it replaces the one in place; Prometheus reloads a changed
    configuration or rule file, and restarts for changed arguments. #}
{%- from 'monitoring/map.jinja' import monitoring, endpoint %}
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
    - mode: '0644'
    - check_cmd: promtool check rules
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

{{ arguments('monitoring-prometheus-arguments', monitoring.components.prometheus, [
     '--config.file=' ~ monitoring.config_dir ~ '/prometheus.yml',
     '--storage.tsdb.path=' ~ monitoring.components.prometheus.data_dir,
     '--web.listen-address=' ~ prometheus_address,
     '--storage.tsdb.retention.time=' ~ monitoring.retention]) }}
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
