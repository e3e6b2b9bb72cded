{%- from 'redis/map.jinja' import redis %}
redis-package:
  pkg.installed:
    - name: {{ redis.package }}
