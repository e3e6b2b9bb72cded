{#- The whole configuration is one Salt-owned file. check_cmd makes Salt run
    `haproxy -c -f` on the new content before it replaces the file: a
    configuration HAProxy refuses fails this state, the file in place stays
    as it was, and the service is neither reloaded nor restarted. The file
    holds the statistics password (read from the pillar by the template, so
    it is not in the state's arguments either): only root and the haproxy
    group read it, and Salt shows no diff of it. #}
{%- from 'haproxy/map.jinja' import haproxy %}
{%- if not salt['pillar.get']('haproxy:stats_password') %}
{{ raise("haproxy: pillar haproxy:stats_password is required (the password of the statistics page, in the environment's secrets.sls)") }}
{%- endif %}
{%- if ':' in haproxy.stats_user %}
{{ raise("haproxy: pillar haproxy:stats_user must not contain ':'") }}
{%- endif %}
{#- Everything the template needs but the secrets. #}
{%- set settings = haproxy.copy() %}
{%- do settings.pop('stats_password', none) %}
{%- do settings.pop('tls', none) %}
include:
  - haproxy.install
  - haproxy.tls

haproxy-config:
  file.managed:
    - name: {{ haproxy.config_file }}
    - source: salt://haproxy/files/haproxy.cfg.jinja
    - template: jinja
    - context:
        settings: {{ settings | json }}
    - user: root
    - group: {{ haproxy.os_group }}
    - mode: '0640'
    - show_changes: false
    - check_cmd: haproxy -c -f
    - require:
      - pkg: haproxy-package
      - file: haproxy-tls-certificate
      - file: haproxy-tls-key
