{#- Three files, so that Salt and Redis's role switches never edit the same
    lines, and a new password takes no restart:
    - config_file is Salt's: every setting, then an include of each of
    - auth_file, the password: the running server takes a new one first
      (redis-password-accepted, which keeps the old one accepted until
      orch.rotate retires it), then it is written here for the next start;
    - role_file, which holds only the role (replicaof). Salt writes it once,
      with the initial role; from then on the redis_replication module
      rewrites it when it switches roles, so a highstate never demotes a
      node that a failover promoted. #}
{%- from 'redis/map.jinja' import redis %}
{%- set node = redis.nodes[grains.id] %}
include:
  - redis.install
  - redis.module_settings

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
        auth_file: {{ redis.auth_file }}
        role_file: {{ redis.role_file }}
    - user: {{ redis.os_user }}
    - group: {{ redis.os_user }}
    - mode: '0640'
    - require:
      - pkg: redis-package

redis-password-accepted:
  redis_replication.password_accepted:
    - name: redis:password
    - require:
      - pkg: redis-package
      - grains: redis-module-settings

redis-auth:
  file.managed:
    - name: {{ redis.auth_file }}
    - source: salt://redis/files/auth.conf.jinja
    - template: jinja
    - user: {{ redis.os_user }}
    - group: {{ redis.os_user }}
    - mode: '0640'
    - show_changes: false
    - require:
      - redis_replication: redis-password-accepted

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
