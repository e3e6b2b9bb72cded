{#- How systemd starts PostgreSQL: on Debian, with pg_ctl -w rather than
    pg_ctlcluster's connection probes (see osfamilymap.yaml), so that a
    standby, a rejoining former primary or a fenced server is up as soon as
    it runs. Stop and reload stay pg_ctlcluster's. As in Debian's unit, the
    start's exit is ignored ('-') and systemd adopts the postmaster by its
    PIDFile: a primary's long crash recovery outlasts pg_ctl's wait, and the
    server must not be killed for it. Backends reset the OOM score the unit
    gives the postmaster, as pg_ctlcluster has them do. #}
{%- from 'postgresql/map.jinja' import postgresql %}
{%- if postgresql.start_with_pg_ctl %}
postgresql-unit-start:
  file.managed:
    - name: /etc/systemd/system/{{ postgresql.service }}.service.d/start-with-pg-ctl.conf
    - makedirs: true
    - contents: |
        # Managed by Salt (salt/postgresql/unit.sls).
        [Service]
        User={{ postgresql.os_user }}
        Environment=PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj
        ExecStart=
        ExecStart=-{{ postgresql.bin_dir }}/pg_ctl start --wait --timeout=60 --silent -D {{ postgresql.data_dir }} -l {{ postgresql.log_file }} -o "-c config_file={{ postgresql.conf_dir }}/postgresql.conf"
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: postgresql-unit-start
{%- endif %}
