# Corral: `make demo` runs a real agent session end to end; `make test` runs every check CI runs.
SHELL := /bin/bash
UV ?= uv
export UV_LINK_MODE ?= copy

.PHONY: help system-deps browser-deps install up down status demo test lint typecheck lint-imports gen gen-check test-unit test-integration bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

system-deps: ## docker.io and debootstrap via apt-get when missing (as root), for sandboxes
	@bash infra/dev/system-deps.sh

browser-deps: ## chromium via apt-get when missing (as root), for the console's browser test
	@bash infra/dev/browser-deps.sh

install: ## create .venv with every package and dev tool (needs uv; `pip install uv` if missing)
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	@$(UV) sync --all-packages --quiet

up: install system-deps ## start NATS, Postgres, OpenBao, Docker and the five services in the background (state in .corral/)
	@CORRAL_EMBEDDED_MODEL_SCRIPT=$${CORRAL_EMBEDDED_MODEL_SCRIPT:-$(CURDIR)/infra/dev/demo-script.json} $(UV) run corral-dev up

down: ## stop everything `make up` started; keeps all data
	@$(UV) run corral-dev down

status: ## what is running
	@$(UV) run corral-dev status

demo: up ## an agent that writes and runs code in its sandbox, through the anthropic SDK, streamed
	@set -a; . .corral/env; set +a; $(UV) run python infra/dev/demo.py

lint: install ## ruff lint and format check
	@$(UV) run ruff check .
	@$(UV) run ruff format --check .

typecheck: install ## mypy --strict over every package
	@$(UV) run mypy libs/*/src services/*/src cli/src proto/generate.py bench infra/dev/demo.py

lint-imports: install ## services never import each other; only corral.bus imports nats
	@$(UV) run lint-imports

gen: install ## regenerate proto/ from the contracts, and the README's settings table from the Settings classes
	@$(UV) run python proto/generate.py
	@$(UV) run python infra/dev/settings_table.py

gen-check: install ## fail when proto/ or the README settings table is stale
	@$(UV) run python proto/generate.py --check
	@$(UV) run python infra/dev/settings_table.py --check

test-unit: install ## unit and contract tests only (no services)
	@$(UV) run pytest tests/unit tests/contract -q

test: system-deps browser-deps lint typecheck lint-imports gen-check ## everything: lint, types, imports, proto, unit, contract, integration, e2e
	@$(UV) run pytest tests -q

bench: install system-deps ## B1..B7 of performance.md, each on a private stack next to its baseline: one table, bench/results/<date>.json
	@$(UV) run python bench/run.py
