# orch.failover's fence agent: before a forced failover promotes anything, a
# former primary whose minion does not answer is powered off through the lab
# CLI (bin/lab fence NODE ADDRESS), as a cloud CLI or IPMI call would in
# production. bin/lab writes airflow_lab_cli into the master's lab.conf;
# without it there is no agent, and a forced failover of a silent primary is
# refused until the operator names it fenced.
{%- if opts.get('airflow_lab_cli') %}
failover:
  fence: {{ opts['airflow_lab_cli'] ~ ' fence' }}
{%- endif %}
