# The two commands of the README: `make demo` and `make test`. Each does all set-up on a fresh
# Debian machine: system packages when missing, then the virtualenv, then the run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# chromium + a CJK font: the dashboard's browser tests (Chinese renders as boxes without the font)
SYS_PKGS := mosquitto mosquitto-clients chromium fonts-wqy-microhei
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench screenshots sysdeps venv clean

sysdeps:
	@missing=""; for p in $(SYS_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: sysdeps venv
	$(BIN)/shilian demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: sysdeps venv
	$(BIN)/pytest -q

test: sysdeps venv lint typecheck pytest

bench: sysdeps venv
	@for b in bench/ingest.py bench/edge_footprint.py bench/coverage.py bench/dashboard.py \
	  bench/provision.py bench/serial_throughput.py bench/alarm_latency.py; do \
	  echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Refresh the README's dashboard screenshots from a browser-test run.
screenshots: sysdeps venv
	$(BIN)/pytest -q tests/test_dashboard.py
	for n in overview county village node wall; do \
	  cp test-artifacts/dashboard/$$n.png docs/screenshots/dashboard-$$n.png; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
