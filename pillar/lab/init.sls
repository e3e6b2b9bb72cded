# The local lab (bin/lab): four systemd-nspawn machines on the host bridge.
include:
  - lab.cluster
  - lab.secrets
  - lab.settings
  - lab.fencing
{#- Settings of this host's lab only, kept out of git (pillar/lab/local.sls
    when it exists): the upgrade test pins airflow:version there
    (tests/conftest.py). #}
{%- for root in opts.get('pillar_roots', {}).get('base', []) if salt['file.file_exists'](root ~ '/lab/local.sls') %}
{%-   if loop.first %}
  - lab.local
{%-   endif %}
{%- endfor %}
