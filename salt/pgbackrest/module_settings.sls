{#- What the pg_backup execution module needs on this node (a grain, so
    that `salt NODE pg_backup.info` works without arguments). #}
{%- from 'pgbackrest/map.jinja' import pgbackrest %}
{%- from 'postgresql/map.jinja' import postgresql %}
pgbackrest-module-settings:
  grains.present:
    - name: pg_backup
    - force: true
    - reload_grains: true
    - value:
        stanza: {{ pgbackrest.stanza }}
        os_user: {{ pgbackrest.os_user }}
        repository: {{ pgbackrest.repository_node }}
        repository_path: {{ pgbackrest.repository.path }}
        schedule: {{ pgbackrest.schedule | json }}
        grace_hours: {{ pgbackrest.grace_hours }}
        redis_copy_dir: {{ pgbackrest.redis_copy_dir }}
        bin_dir: {{ postgresql.bin_dir }}
        conf_dir: {{ postgresql.conf_dir }}
        data_dir: {{ postgresql.data_dir }}
        service: {{ postgresql.service }}
        socket_dir: {{ postgresql.socket_dir }}
        port: {{ postgresql.port }}
        restore_directory: {{ pgbackrest.restore.directory }}
        restore_port: {{ pgbackrest.restore.port }}
        database: {{ postgresql.database }}
