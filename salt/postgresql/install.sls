{%- from 'postgresql/map.jinja' import postgresql %}
postgresql-packages:
  pkg.installed:
    - pkgs: {{ postgresql.packages | json }}
{%- if postgresql.initdb %}

postgresql-initdb:
  cmd.run:
    - name: {{ postgresql.initdb }}
    - creates: {{ postgresql.data_dir }}/PG_VERSION
    - require:
      - pkg: postgresql-packages
{%- endif %}
