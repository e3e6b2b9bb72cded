# Lab-only secrets. They protect nothing but the lab on this host; a real
# environment keeps its secrets out of git (see pillar/production/secrets.sls).
postgresql:
  replication_password: lab-replication-8d1f63c2
  airflow_password: lab-airflow-db-5be04a17
redis:
  password: lab-redis-3c9e2f71
airflow:
  # Identical on every Airflow node (32 url-safe base64 bytes).
  fernet_key: 7w5rJ9yqv3m0Zb3Sx1F2nQm4cA8dE6fG0hJ2kL4nP6s=
  webserver_secret_key: lab-webserver-secret-2b8e41d0a9c7
  admin:
    password: lab-admin-71c3e9
  flower:
    password: lab-flower-4f2a86
  users:
    viewer:
      password: lab-viewer-9d03b1
      roles: [Viewer]
haproxy:
  stats_password: lab-haproxy-stats-7a42c9e1
