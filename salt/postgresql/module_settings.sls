{#- What the pg_replication execution module needs to find this node's
    PostgreSQL (a grain, so `salt NODE pg_replication.status` works without
    arguments), and the replication password for connections to the other
    database node, in the postgres account's libpq passfile. #}
{%- from 'postgresql/map.jinja' import postgresql %}
{%- from 'escape.jinja' import pgpass_field %}
include:
  - postgresql.install

postgresql-module-settings:
  grains.present:
    - name: pg_replication
    - force: true
    # The modules the next states call read their settings from this grain:
    # reload grains, then modules, so that they see it in this very run.
    - reload_grains: true
    - value:
        bin_dir: {{ postgresql.bin_dir }}
        data_dir: {{ postgresql.data_dir }}
        conf_dir: {{ postgresql.conf_dir }}
        service: {{ postgresql.service }}
        port: {{ postgresql.port }}
        socket_dir: {{ postgresql.socket_dir }}
        os_user: {{ postgresql.os_user }}
        replication_user: {{ postgresql.replication_user }}
        passfile: {{ postgresql.passfile }}
        node_name: {{ grains.id }}

postgresql-passfile:
  file.managed:
    - name: {{ postgresql.passfile }}
    - contents: {{ ('*:*:*:' ~ pgpass_field(postgresql.replication_user) ~ ':'
                    ~ pgpass_field(postgresql.replication_password)) | json }}
    - user: {{ postgresql.os_user }}
    - group: {{ postgresql.os_user }}
    - mode: '0600'
    - show_changes: false
    - require:
      - pkg: postgresql-packages
