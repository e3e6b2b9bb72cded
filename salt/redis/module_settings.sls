{#- What the redis_replication execution module needs to find this node's
    Redis (a grain, so `salt NODE redis_replication.status` needs no
    arguments). The password stays in the auth file, which only root and
    the redis account can read. #}
{%- from 'redis/map.jinja' import redis %}
redis-module-settings:
  grains.present:
    - name: redis_replication
    - force: true
    # The modules the next states call read their settings from this grain:
    # reload grains, then modules, so that they see it in this very run.
    - reload_grains: true
    - value:
        host: 127.0.0.1
        port: {{ redis.port }}
        password_file: {{ redis.auth_file }}
        role_file: {{ redis.role_file }}
        service: {{ redis.service }}
        announce_host: {{ redis.nodes[grains.id].address }}
