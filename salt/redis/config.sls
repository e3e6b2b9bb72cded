{#- Two files, so that Salt and Redis's role switches never edit the same
    lines:
    - config_file is Salt's: every setting, and last, an include of
    - role_file, which holds only the role (replicaof). Salt writes it once,
      with the initial role; from then on the redis_replication module
      rewrites it when it switches roles, so a highstate never demotes a
      node that a failover promoted. #}
{%- from 'redis/map.jinja' import redis %}
{%- set node = redis.nodes[grains.id] %}
include:
  - redis.install

redis-settings:
  file.managed:
    - name: {{ redis.config_file }}
    - source: salt://redis/files/redis.conf.jinja
    - template: jinja
    - context:
        bind: 127.0.0.1 {{ node.address }}
        port: {{ redis.port }}
        data_dir: {{ redis.data_dir }}
        settings: {{ redis.settings | json }}
        role_file: {{ redis.role_file }}
    - user: {{ redis.os_user }}
    - group: {{ redis.os_user }}
    - mode: '0640'
    - show_changes: false
    - require:
      - pkg: redis-package

redis-initial-role:
  file.managed:
    - name: {{ redis.role_file }}
    - source: salt://redis/files/replication.conf.jinja
    - template: jinja
    - context:
        master_address: {{ (redis.nodes[redis.master].address if grains.id != redis.master else '') | json }}
        port: {{ redis.port }}
    - user: {{ redis.os_user }}
    - group: {{ redis.os_user }}
    - mode: '0640'
    # Written once: afterwards the role is the module's to record.
    - replace: false
    - require:
      - pkg: redis-package
