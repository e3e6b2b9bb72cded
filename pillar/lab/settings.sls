# The lab installs Python packages offline from the host's wheelhouse
# (bin/lab bind-mounts it read-only at /opt/wheelhouse on every node).
airflow:
  pip:
    find_links: /opt/wheelhouse

# Monitoring, on airflow-lb1 (README: Monitoring):
# short waits, so that the lab tests see an alert within seconds of its
# fault, and every alert sent to the webhook the tests run on the host (the
# lab bridge's gateway address).
monitoring:
  scrape_interval: 15s
  evaluation_interval: 15s
  metrics_interval: 15
  # The lab's certificate is its own (pillar/lab/secrets.sls), from no CA
  # the monitoring node trusts.
  probe_tls: {insecure_skip_verify: true}
  alerts:
    metrics_stale_seconds: 60
    pending_critical: 10s
    pending_warning: 20s
    heartbeat_window: 1m
    restart_window: 5m
  alertmanager:
    route:
      receiver: lab-tests
      group_wait: 1s
      group_interval: 5s
      repeat_interval: 1h
    receivers:
      - name: lab-tests
        webhook_configs:
          - url: http://10.11.12.1:9099/alerts
            send_resolved: true
