{#- The virtual environment, built with the OS Python, holding
    apache-airflow[extras] at the pinned version, installed with the
    constraints file of that version and Python. #}
{%- from 'airflow/map.jinja' import airflow %}
{%- set constraints = airflow.home ~ '/constraints-' ~ airflow.version ~ '.txt' %}
{%- set requirement = 'apache-airflow[' ~ airflow.extras | join(',') ~ ']==' ~ airflow.version %}
{%- set pip_source = ('--no-index --find-links ' ~ airflow.pip.find_links) if airflow.pip.find_links
                     else ('--index-url ' ~ airflow.pip.index_url) if airflow.pip.index_url else '' %}
airflow-python:
  pkg.installed:
    - pkgs: {{ airflow.python_packages | json }}

airflow-constraints:
  file.managed:
    - name: {{ constraints }}
    - source: salt://airflow/files/constraints-{{ airflow.version }}-py3.11.txt
    - user: {{ airflow.user }}
    - group: {{ airflow.user }}
    - mode: '0644'

airflow-venv:
  cmd.run:
    - name: {{ airflow.python }} -m venv {{ airflow.venv }}
    - creates: {{ airflow.venv }}/bin/python
    - runas: {{ airflow.user }}
    - require:
      - pkg: airflow-python

airflow-package:
  cmd.run:
    - name: >-
        {{ airflow.venv }}/bin/pip install --quiet --disable-pip-version-check
        {{ pip_source }} -c {{ constraints }} '{{ requirement }}'
    - unless: >-
        {{ airflow.venv }}/bin/python -c "import importlib.metadata as m, sys;
        sys.exit(m.version('apache-airflow') != '{{ airflow.version }}')"
    - runas: {{ airflow.user }}
    - env:
        # The node's own pip settings must not redirect the install.
        PIP_CONFIG_FILE: /dev/null
    - require:
      - cmd: airflow-venv
      - file: airflow-constraints
