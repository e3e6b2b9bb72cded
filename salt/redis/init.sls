{#- Redis, the Celery broker: one master (the primary: see salt/settings.jinja), the other nodes
    with the redis role its replicas. #}
include:
  - redis.install
  - redis.config
  - redis.service
  - redis.module_settings
  - redis.mine
  {#- Last: on a fresh environment the other node cannot report yet. #}
  - redis.start_guard
