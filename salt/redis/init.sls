{#- Redis, the Celery broker: one master (cluster:primary), the other nodes
    with the redis role its replicas. #}
include:
  - redis.install
  - redis.config
  - redis.service
  - redis.module_settings
