{%- from 'pgbackrest/map.jinja' import pgbackrest %}
pgbackrest-package:
  pkg.installed:
    - name: {{ pgbackrest.package }}
