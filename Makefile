# The two commands a newcomer needs: `make demo` (the whole system, end to end) and `make test`.
PYTHON ?= python3

.PHONY: setup demo test unit faults

setup:
	bash scripts/setup.sh

demo: setup
	$(PYTHON) -m streamrec.cli demo $(ARGS)

test: setup
	$(PYTHON) -m pytest -q $(ARGS)

unit: setup
	$(PYTHON) -m pytest -q -m "not integration" $(ARGS)

faults: setup
	$(PYTHON) -m pytest -q -m faults tests/faults $(ARGS)
