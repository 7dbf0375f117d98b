# Two entry points for a new user (see README): `make demo` and `make test`.
# Both create ./.venv on first use with CPU torch pinned by constraints-cpu.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint install

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints-cpu.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints-cpu.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/dynofa demo

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m mypy

# `make install` puts the systemd unit, sysusers and tmpfiles entries and the docs the unit's
# Documentation= names under $(DESTDIR)$(PREFIX); the Python package itself is pip's job
# (`sudo python3 -m pip install .`, on a Jetson after NVIDIA's torch). ExecStart= gets $(DYNOFA):
# the dynofa found on PATH, else $(BINDIR)/dynofa; pass DYNOFA=/opt/dynofa/venv/bin/dynofa for a venv.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
DYNOFA ?= $(or $(shell command -v dynofa 2>/dev/null),$(BINDIR)/dynofa)
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
DOCDIR ?= $(PREFIX)/share/doc/dynofa
INSTALL ?= install
DOCS := $(wildcard docs/*.md) docs/grafana-dashboard.json

install:
	@case "$(DYNOFA)" in /*) ;; *) echo "make install: DYNOFA must be an absolute path, got '$(DYNOFA)'" >&2; exit 2;; esac
	@if [ -z "$(DESTDIR)" ] && [ ! -x "$(DYNOFA)" ]; then \
		echo "make install: $(DYNOFA) is not an executable; install dynofa first (sudo python3 -m pip install .)" \
			"or pass DYNOFA=/path/to/bin/dynofa" >&2; exit 2; fi
	$(INSTALL) -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(DOCDIR)
	sed -e 's|/usr/local/bin/dynofa|$(DYNOFA)|g' -e 's|file:///usr/local/share/doc/dynofa/|file://$(DOCDIR)/|g' \
		systemd/dynofa.service > $(DESTDIR)$(UNITDIR)/dynofa.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/dynofa.service
	$(INSTALL) -m 0644 systemd/dynofa.sysusers $(DESTDIR)$(SYSUSERSDIR)/dynofa.conf
	$(INSTALL) -m 0644 systemd/dynofa.tmpfiles $(DESTDIR)$(TMPFILESDIR)/dynofa.conf
	$(INSTALL) -m 0644 $(DOCS) $(DESTDIR)$(DOCDIR)/
	@echo "installed the unit for $(DYNOFA); next: systemd-sysusers && systemd-tmpfiles --create &&" \
		"systemctl daemon-reload && systemctl enable --now dynofa"
