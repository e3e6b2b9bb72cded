{%- from 'redis/map.jinja' import redis %}
include:
  - redis.config

redis-service:
  service.running:
    - name: {{ redis.service }}
    - enable: true
    - watch:
      - file: redis-settings
      - file: redis-initial-role
