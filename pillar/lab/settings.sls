# The lab installs Python packages offline from the host's wheelhouse
# (bin/lab bind-mounts it read-only at /opt/wheelhouse on every node).
airflow:
  pip:
    find_links: /opt/wheelhouse
