# The two commands of the README: `make demo` and `make test`. Both bootstrap .venv first.
.PHONY: demo test bootstrap lint fuzz bench clean image

VENV := .venv
PY := $(VENV)/bin/python

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	@$(PY) examples/demo.py

test: bootstrap
	@bash scripts/test.sh

lint: bootstrap
	$(PY) -m ruff check runnerlib tests fuzz bench
	$(PY) -m mypy runnerlib

fuzz: bootstrap
	$(PY) -m pip install -q -e '.[fuzz]'
	bash fuzz/run_all.sh

# The runner image, offline: images/build.sh (VARIANT=python3.11 or node20; ENGINE=podman or docker).
VARIANT ?= python3.11
image: bootstrap
	@bash images/build.sh $(VARIANT)

bench: bootstrap
	bash bench/run_all.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
