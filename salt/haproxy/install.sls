{%- from 'haproxy/map.jinja' import haproxy %}
haproxy-package:
  pkg.installed:
    - name: {{ haproxy.package }}
