# The README's two commands. Each runs runners/bootstrap.sh first (idempotent: seconds when warm).
#
#   make demo                          the job end to end on the local services
#   make test [PYTEST_ARGS='-m integration -x']   the whole test suite

.PHONY: bootstrap demo test services-down

VENV := .venv
PYTEST_ARGS ?=

bootstrap:
	@runners/bootstrap.sh

demo: bootstrap
	$(VENV)/bin/personalize demo

# pytest's exit code 5 means it collected no test: that is a failure here, not a pass.
test: bootstrap
	@rc=0; $(VENV)/bin/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
	exit $$rc

services-down:
	$(VENV)/bin/personalize services down
