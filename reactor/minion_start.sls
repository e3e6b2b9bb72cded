{#- Reactor: a minion has started (its node booted, or its minion came back).
    A node that was down while a runbook moved the primaries takes the
    current topology record and Airflow configuration at once
    (salt-run airflow_ha.returning_node NODE does nothing for a node that
    missed nothing). Wired in etc/salt/master. #}
returning-node-follows:
  runner.airflow_ha.returning_node:
    - args:
      - node: {{ data['id'] | json }}
