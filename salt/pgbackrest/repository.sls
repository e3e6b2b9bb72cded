{#- The node with the backup role: the pgBackRest repository, its stanza,
    the first full backup, and the timers of the scheduled backups (each
    followed by a copy of the Redis broker's data). #}
{%- from 'pgbackrest/map.jinja' import pgbackrest %}
{%- from 'escape.jinja' import systemd_env %}
{%- set repository = pgbackrest.repository.path %}
{%- set stanza = pgbackrest.stanza %}
{%- set environment_file = '/etc/pgbackrest/airflow-backup.env' %}
{#- Whether the stanza and a full backup exist: on the node's disk, or, for
    an object store, as pgBackRest's info tells (status 0: ok, 2: no backup
    yet). #}
{%- if pgbackrest.repository.type == 's3' %}
{#-   Whoever runs it (the stanza's state runs as the pgBackRest user, the
      backup's as root), it writes no log file. #}
{%-   set info = 'pgbackrest --log-level-file=off --stanza=' ~ stanza ~ ' --output=json info' %}
{%-   set stanza_exists = info ~ ' | grep -Eq \'"status":\\{"code":(0|2),\'' %}
{%-   set full_backup_exists = info ~ ' | grep -q \'"type":"full"\'' %}
{%- else %}
{%-   set stanza_exists = 'test -e ' ~ repository ~ '/backup/' ~ stanza ~ '/backup.info' %}
{%-   set full_backup_exists = 'ls -d ' ~ repository ~ '/backup/' ~ stanza ~ '/*F' %}
{%- endif %}
include:
  - pgbackrest.config
  - pgbackrest.module_settings

pgbackrest-repository:
  file.directory:
    - names:
      - {{ repository }}
      - {{ pgbackrest.redis_copy_dir }}
    - user: {{ pgbackrest.os_user }}
    - group: {{ pgbackrest.os_user }}
    - mode: '0750'
    - makedirs: true
    - require:
      - pkg: pgbackrest-package

{#- On a new environment every node's highstate runs at once: the stanza
    waits for the primary's PostgreSQL and pgBackRest server to come up. #}
pgbackrest-stanza:
  cmd.run:
    - name: pgbackrest --stanza={{ stanza }} stanza-create
    - runas: {{ pgbackrest.os_user }}
    - cwd: /
    - unless: {{ stanza_exists | json }}
    - retry:
        attempts: 40
        interval: 10
    - require:
      - file: pgbackrest-repository
      - service: pgbackrest-service

pgbackrest-redis-cli:
  pkg.installed:
    - name: {{ pgbackrest.redis_cli_package }}

{#- Two programs, each with its unit: the database's backup, and the copy of
    the Redis broker's data that each backup pulls in (a failed copy does
    not fail the backup). #}
{%- set programs = {
      'backup': {'script': '/usr/local/sbin/airflow-backup', 'unit': 'airflow-backup@'},
      'redis-copy': {'script': '/usr/local/sbin/airflow-redis-copy', 'unit': 'airflow-redis-copy@'}} %}
{%- for program, files in programs | dictsort %}

pgbackrest-{{ program }}-script:
  file.managed:
    - name: {{ files.script }}
    - source: salt://pgbackrest/files/airflow-{{ program }}.sh.jinja
    - template: jinja
    - context:
        stanza: {{ stanza }}
        redis_nodes: {{ pgbackrest.redis_nodes | json }}
        redis_port: {{ pgbackrest.redis_port }}
        copy_dir: {{ pgbackrest.redis_copy_dir }}
        retention_days: {{ pgbackrest.repository.retention_days }}
    - mode: '0755'

pgbackrest-{{ program }}-unit:
  file.managed:
    - name: /etc/systemd/system/{{ files.unit }}.service
    - source: salt://pgbackrest/files/{{ files.unit }}.service.jinja
    - template: jinja
    - context:
        os_user: {{ pgbackrest.os_user }}
        environment_file: {{ environment_file }}
        script: {{ files.script }}
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pgbackrest-{{ program }}-unit
{%- endfor %}

{%- if pgbackrest.repository.type == 's3' %}

{#- The object store's keys, for pgBackRest only (it reads conf.d). #}
pgbackrest-s3-keys:
  file.managed:
    - name: {{ pgbackrest.config_file | replace('pgbackrest.conf', 'conf.d/s3-keys.conf') }}
    - source: salt://pgbackrest/files/s3-keys.conf.jinja
    - template: jinja
    - makedirs: true
    - user: root
    - group: {{ pgbackrest.os_user }}
    - mode: '0640'
    - show_changes: false
    - require_in:
      - cmd: pgbackrest-stanza
{%- endif %}

{#- The Redis password, for redis-cli (REDISCLI_AUTH), never on a command line. #}
pgbackrest-backup-environment:
  file.managed:
    - name: {{ environment_file }}
    - contents: {{ ('REDISCLI_AUTH=' ~ systemd_env(salt['pillar.get']('redis:password'))) | json }}
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: false
    - require:
      - pkg: pgbackrest-package

{#- The first full backup, so that the environment can be restored from
    the start. #}
pgbackrest-first-full-backup:
  cmd.run:
    - name: systemctl start airflow-backup@full.service
    - unless: {{ full_backup_exists | json }}
    - retry:
        attempts: 5
        interval: 20
    - require:
      - cmd: pgbackrest-stanza
      - pkg: pgbackrest-redis-cli
      - file: pgbackrest-backup-script
      - file: pgbackrest-redis-copy-script
      - file: pgbackrest-backup-environment
      - module: pgbackrest-backup-unit
      - module: pgbackrest-redis-copy-unit

{#- A type whose schedule the pillar empties has no timer. #}
{%- for type, calendar in pgbackrest.schedule | dictsort %}
{%-   if calendar %}

pgbackrest-{{ type }}-timer:
  file.managed:
    - name: /etc/systemd/system/airflow-backup-{{ type }}.timer
    - source: salt://pgbackrest/files/airflow-backup.timer.jinja
    - template: jinja
    - context:
        type: {{ type }}
        calendar: {{ calendar | json }}
  service.running:
    - name: airflow-backup-{{ type }}.timer
    - enable: true
    - require:
      - cmd: pgbackrest-first-full-backup
    - watch:
      - file: pgbackrest-{{ type }}-timer
{%-   else %}

pgbackrest-{{ type }}-timer:
  service.dead:
    - name: airflow-backup-{{ type }}.timer
    - enable: false
  file.absent:
    - name: /etc/systemd/system/airflow-backup-{{ type }}.timer
    - require:
      - service: pgbackrest-{{ type }}-timer
{%-   endif %}
{%- endfor %}
