{%- from 'common/map.jinja' import common %}
common-packages:
  pkg.installed:
    - pkgs: {{ common.packages | json }}
