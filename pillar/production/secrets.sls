# Secrets of the environment. Keep them out of git: render this file from an
# encrypted source (for example Salt's gpg renderer: `#!yaml|gpg` with
# ciphertext values) or an external pillar. Every value below must be set.
postgresql:
  # Password of the replication role (streaming replication, pg_rewind).
  replication_password: CHANGE-ME
  # Password of the Airflow database owner.
  airflow_password: CHANGE-ME
redis:
  # requirepass and masterauth of every Redis node.
  password: CHANGE-ME
