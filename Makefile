# The two commands: `make run` (the whole system, embedded defaults) and `make test`; and
# `make manage ARGS="dlq_inspect invoicing"`: any manage.py command against the running `make run`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run manage test lint bench clean

$(STAMP): requirements/base.txt requirements/dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements/dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) scripts/devstack.py run

manage: $(STAMP)
	@$(PY) scripts/devstack.py manage $(ARGS)

test: $(STAMP)
	$(PY) scripts/devstack.py test $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
