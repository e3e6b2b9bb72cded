{%- from 'common/map.jinja' import common %}
{%- for account, settings in common.service_accounts | dictsort %}
common-account-{{ account }}:
  group.present:
    - name: {{ account }}
    - system: {{ settings.system }}
  user.present:
    - name: {{ account }}
    - gid: {{ account }}
    - home: {{ settings.home }}
    - createhome: true
    - shell: {{ settings.get('shell', common.nologin_shell) }}
    - system: {{ settings.system }}
    - require:
      - group: common-account-{{ account }}
{%- endfor %}
