# Lab-only secrets. They protect nothing but the lab on this host; a real
# environment keeps its secrets out of git (see pillar/production/secrets.sls).
postgresql:
  replication_password: lab-replication-8d1f63c2
  airflow_password: lab-airflow-db-5be04a17
redis:
  password: lab-redis-3c9e2f71
