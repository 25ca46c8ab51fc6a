# The two commands of the README:
#   make run    set everything up, then run the main job on the simulated robot
#   make test   set everything up, then run the test suite
# Both are idempotent: tools/bootstrap.sh skips every step that is already done.
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup run test bench clean
setup:
	@bash tools/bootstrap.sh

run: setup
	@$(VENV)/bin/resfit-ros main-job

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	@for b in learner sim control-loop ingest; do $(VENV)/bin/resfit-ros bench $$b || exit 1; done

clean:
	rm -rf build $(VENV) outputs
