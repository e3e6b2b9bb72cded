{%- from 'redis/map.jinja' import redis %}
include:
  - redis.config

redis-service:
  service.running:
    - name: {{ redis.service }}
    - enable: true
    # A new password is no reason to restart (redis-password-accepted).
    - require:
      - file: redis-auth
    - watch:
      - file: redis-settings
      - file: redis-initial-role
