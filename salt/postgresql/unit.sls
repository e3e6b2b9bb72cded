{#- How systemd starts PostgreSQL: on Debian, with pg_ctl -w rather than
    pg_ctlcluster's connection probes (see osfamilymap.yaml), so that a
    standby, a rejoining former primary or a fenced server is up as soon as
    it runs. Stop and reload stay pg_ctlcluster's. #}
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
        ExecStart=
        ExecStart={{ postgresql.bin_dir }}/pg_ctl start --wait --timeout=3600 --silent -D {{ postgresql.data_dir }} -l {{ postgresql.log_file }} -o "-c config_file={{ postgresql.conf_dir }}/postgresql.conf"
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: postgresql-unit-start
{%- endif %}
