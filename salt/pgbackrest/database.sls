{#- A database server of the stanza: pgBackRest's configuration and TLS
    server, which the repository backs up through and PostgreSQL's
    archive_command (salt/postgresql/map.jinja) pushes WAL with. Nothing
    without a node with the backup role. #}
{%- from 'pgbackrest/map.jinja' import pgbackrest %}
{%- if pgbackrest.repository_node %}
include:
  - pgbackrest.config
  - pgbackrest.module_settings
{%- endif %}
