# Example production environment: the seed's two servers and a worker. Copy
# this folder per environment (pillar/<name>/) and name it in the master
# configuration with `airflow_environment: <name>`.
include:
  - production.cluster
  - production.secrets
  - production.settings
