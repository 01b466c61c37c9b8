# The two commands of the README: `make demo` (local stack with a demo salon) and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: demo down status test lint bootstrap qr

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	@$(PY) -m devstack up

down:
	@if [ -x $(PY) ]; then $(PY) -m devstack down; else echo "nothing to stop"; fi

status:
	@$(PY) -m devstack status

COMPANY ?= company_1001
qr:
	@SALON_REDIS_URL="$$($(PY) -c 'import json; print(json.load(open(".stack/state.json"))["redis_api_url"])')" \
		.venv/bin/salon-sessions qr $(COMPANY)

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/mypy --strict examples/echo_bot.py  # a bot author's code, typed as ours

test: bootstrap lint
	.venv/bin/pytest $(PYTEST_ARGS)
