# The two commands a fresh Debian machine needs:
#   make lab    install what the lab needs, bring the lab up on this machine, search its capacity
#   make test   install what the tests need, then lint and run every test
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The venv is made from Debian's own Python where there is one: built with PGO and LTO, it runs the tests, Locust
# and Ansible a fifth faster than an interpreter built from source (pyenv's default build).
SYSTEM_PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: lab test venv system lint unit teardown dashboards clean hosts hosts-down

system:
	bash scripts/bootstrap.sh

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(SYSTEM_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

lab: system venv
	ansible-playbook lab.yml
	loadlab status
	loadlab sweep --spec scripts/sweeps/search.yml

lint: venv
	ruff check .
	ruff format --check .
	ansible-lint --offline lab.yml playbooks/

unit: venv
	pytest -m fast --durations=10 tests

test: system venv lint
	pytest --durations=25 tests

teardown: venv
	ansible-playbook playbooks/teardown.yml

# Test hosts on this machine (own netns, filesystem, process tree, sshd): the multi-host lab without hosts.
hosts: system venv
	bash scripts/testhosts.sh up

hosts-down:
	bash scripts/testhosts.sh down

dashboards: venv
	$(PY) -m loadlab.dashboards

clean: teardown
	rm -rf $(VENV)
