{#- The version's virtual environment, built with the OS Python, holding
    apache-airflow[extras] at the pinned version, installed with the
    constraints file of that version and Python; then airflow:venv, which
    every unit runs from, points at it. orch.upgrade applies this state
    without airflow-venv-current first, to install a new version while the
    old one runs. A virtual environment of an earlier version stays: a
    rollback points back at it. #}
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
    - name: mkdir -p {{ airflow.venvs }} && {{ airflow.python }} -m venv {{ airflow.release_venv }}
    - creates: {{ airflow.release_venv }}/bin/python
    - runas: {{ airflow.user }}
    - require:
      - pkg: airflow-python

airflow-package:
  cmd.run:
    - name: >-
        {{ airflow.release_venv }}/bin/pip install --quiet --disable-pip-version-check
        {{ pip_source }} -c {{ constraints }} '{{ requirement }}'
    - unless: >-
        {{ airflow.release_venv }}/bin/python -c "import importlib.metadata as m, sys;
        sys.exit(m.version('apache-airflow') != '{{ airflow.version }}')"
    - runas: {{ airflow.user }}
    - env:
        # The node's own pip settings must not redirect the install.
        PIP_CONFIG_FILE: /dev/null
    - require:
      - cmd: airflow-venv
      - file: airflow-constraints

# A virtual environment of a tree before versioned ones (a directory at
# airflow:venv) is moved aside (and may be deleted): the units restart on
# the version's.
airflow-venv-current:
  file.symlink:
    - name: {{ airflow.venv }}
    - target: {{ airflow.release_venv }}
    - force: true
    - backupname: {{ airflow.venv }}.before-versioned
    - require:
      - cmd: airflow-package
