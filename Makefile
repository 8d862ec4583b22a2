# The two commands a newcomer needs: `make demo` (the whole system, end to end) and `make test`.
# Both run `setup` first: system packages if missing, and the project virtualenv (.venv), which
# every target uses; the interpreter's own site-packages are never touched (PEP 668).
# PYTHON picks the interpreter that creates the venv (default python3; >= 3.10).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export STREAMREC_VENV := $(VENV)

.PHONY: setup demo test unit faults soak

# The soak's length in `make soak` (STREAMREC_SOAK_S); `make faults` runs it too, for
# STREAMREC_SOAK_S seconds (default 600; CI sets 300).
SOAK_S ?= 600

setup:
	PYTHON=$(PYTHON) bash scripts/setup.sh

demo: setup
	$(PY) -m cli demo $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

unit: setup
	$(PY) -m pytest -q -m "not integration" $(ARGS)

# Every test in tests/faults (the default suite deselects them: addopts -m 'not faults').
faults: setup
	$(PY) -m pytest -q -m faults tests/faults $(ARGS)

# The full soak alone: 10 minutes of mixed traffic at half saturation.
soak: setup
	STREAMREC_SOAK_S=$(SOAK_S) $(PY) -m pytest -q -m faults tests/faults/test_soak.py $(ARGS)
