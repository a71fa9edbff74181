# Entry points for a fresh machine: `make demo` (the main job), `make test` (the fast tier)
# and `make test-all` (every test: the slow tier too, and the GPU tests where there is CUDA).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-all bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU machines get torch from the local mirror; pin it so CI and developers agree.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# --force: a second `make demo` rebuilds the demo/ it wrote before (a foreign demo/ is still refused).
demo: $(STAMP)
	$(VENV)/bin/simclr-watches demo --force

# The fast tier: well under a minute of test time on two CPU cores.
test: $(STAMP)
	$(PY) -m pytest -q

# Every test: adds the slow tier (real encoder and registry models, real processes).
test-all: $(STAMP)
	$(PY) -m pytest -q --slow

clean:
	rm -rf $(VENV) .pytest_cache
