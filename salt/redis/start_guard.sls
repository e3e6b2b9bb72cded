{#- Before Redis starts: if its role file makes it a master while another
    Redis node already is the master, make it follow that one
    (salt/start_guard). That is how a former master that was failed over
    while it was down comes back without making two masters. #}
{%- from 'redis/map.jinja' import redis %}
{%- from 'start_guard/unit.jinja' import start_guard_unit %}
{%- set peers = [] %}
{%- for name, node in redis.nodes | dictsort if name != grains.id and 'redis' in node.roles %}
{%-   do peers.append(node.address ~ ':' ~ redis.port) %}
{%- endfor %}
include:
  - start_guard
  - redis.install

{{ start_guard_unit('redis', redis.service,
               [redis.role_file, redis.config_file, redis.cli] + peers) }}
