{#- The Airflow UI's TLS certificate and key (pillar haproxy:tls), for
    HAProxy: the key in <certificate file>.key, where HAProxy finds it.
    Salt reads both from the pillar on the node (contents_pillar), so they
    are neither in the state's arguments nor in its change output; only root
    and the haproxy group read them. #}
{%- from 'haproxy/map.jinja' import haproxy %}
include:
  - haproxy.install

{%- for id, file, key in [('haproxy-tls-certificate', haproxy.tls_certificate_file, 'haproxy:tls:certificate'),
                          ('haproxy-tls-key', haproxy.tls_certificate_file ~ '.key', 'haproxy:tls:key')] %}

{{ id }}:
  file.managed:
    - name: {{ file }}
    - contents_pillar: {{ key }}
    - makedirs: true
    - user: root
    - group: {{ haproxy.os_group }}
    - mode: '0640'
    - show_changes: false
    - require:
      - pkg: haproxy-package
{%- endfor %}
