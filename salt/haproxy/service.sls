{#- A changed configuration is reloaded, not restarted: HAProxy's reload
    hands the listening sockets to new processes while the old ones finish
    their requests. The file was validated by haproxy -c before it was put in
    place (config.sls), and the unit's reload validates it again. #}
{%- from 'haproxy/map.jinja' import haproxy %}
include:
  - haproxy.config

haproxy-service:
  service.running:
    - name: {{ haproxy.service }}
    - enable: true
    - reload: true
    - watch:
      - file: haproxy-config
      - file: haproxy-tls-certificate
      - file: haproxy-tls-key
