# SaveOS developer entry points. Both `demo` and `test` need root (namespaces, mounts, apt).
VENV ?= .venv
PY := $(VENV)/bin/python
SYSTEM_PACKAGES := openssh-server borgbackup python3 python3-venv iproute2 util-linux sqlite3 \
  chromium systemd-container debootstrap

.PHONY: system-deps venv demo demo-down test test-fast lint collection

system-deps:
	@command -v sshd >/dev/null && command -v borg >/dev/null && command -v unshare >/dev/null \
	  && command -v chromium >/dev/null \
	  && command -v systemd-nspawn >/dev/null && command -v debootstrap >/dev/null \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES))

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# The main job on the embedded default: lab hosts + SQLite API, deploy, back up, show status.
demo: system-deps venv
	PATH=$(abspath $(VENV))/bin:$$PATH bash .ci/demo

demo-down: venv
	PATH=$(abspath $(VENV))/bin:$$PATH bash .ci/demo down

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@if [ -d roles/saveos_agent ]; then PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/ansible-lint --profile production playbooks roles; fi

# Everything: lint, unit, API (SQLite + PostgreSQL), agent with real borg, lab tests over SSH.
test: system-deps venv lint
	PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/pytest

# The fast subset for iteration: no lab hosts.
test-fast: venv
	PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/pytest -m "not lab"

# The saveos.fleet Ansible collection (AWX / Automation Platform), built from roles/, playbooks/
# and agent/ into build/saveos-fleet-<version>.tar.gz.
collection: venv
	PATH=$(abspath $(VENV))/bin:$$PATH $(PY) collections/build.py
