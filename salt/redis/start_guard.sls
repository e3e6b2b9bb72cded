{#- Before Redis starts: a node whose role file makes it a master stays one
    only with positive evidence that it is the master now; otherwise it
    starts as a replica, taking no writes (salt/start_guard,
    ha_core.guard). That is how a former master that was failed over while
    it was down, or cut off, comes back without making two masters. #}
{%- from 'redis/map.jinja' import redis %}
{%- from 'start_guard/unit.jinja' import start_guard_unit %}
include:
  - start_guard
  - redis.install

{{ start_guard_unit('redis', redis.service, ['--role-file', redis.role_file, '--redis-port', redis.port]) }}
