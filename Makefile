# The two commands a newcomer runs (see README.md):
#   make lab    bring up the local lab and apply the highstate on every node
#   make test   run the whole test suite (unit, render, and lab tests)
# Both install what they need first: Debian packages and the .venv toolchain.

VENV := .venv
PYTHON := $(VENV)/bin/python

.PHONY: lab test lab-down deps host-packages venv master-config lock

lab: deps
	bin/lab up

lab-down: deps
	bin/lab down

test: deps
	$(PYTHON) -m pytest

deps: host-packages venv master-config

# Where this checkout's states, pillar and runners are, for the master (see etc/salt/master).
master-config:
	@mkdir -p etc/salt/master.d
	@printf '%s\n' '# Written by make for this checkout; do not edit.' \
	    'file_roots:' '  base:' '    - $(CURDIR)/salt' \
	    'pillar_roots:' '  base:' '    - $(CURDIR)/pillar' \
	    'runner_dirs:' '  - $(CURDIR)/_runners' \
	    'utils_dirs:' '  - $(CURDIR)/_utils' > etc/salt/master.d/checkout.conf

host-packages:
	bin/install-host-packages

venv: $(VENV)/.installed

$(VENV)/.installed: requirements/host.txt requirements/host.lock
	/usr/bin/python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements/host.txt -c requirements/host.lock
	touch $@

# Re-resolve the host toolchain after editing requirements/host.txt.
lock:
	rm -rf $(VENV).lock-tmp
	/usr/bin/python3 -m venv $(VENV).lock-tmp
	$(VENV).lock-tmp/bin/pip install --quiet -r requirements/host.txt
	$(VENV).lock-tmp/bin/pip freeze --all --exclude pip --exclude setuptools > requirements/host.lock
	rm -rf $(VENV).lock-tmp
