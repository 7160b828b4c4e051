# Every target creates its own virtual environment when it is missing. `make demo` installs only
# updaterd's runtime dependencies; the test, lint and bench targets add their extras on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test test-long test-systemd test-power test-fleet fleet-figures mutate mutate-quick demo bench bench-quick lint clean venv deps deb

# The runtime: what `pip install updaterd` gives an operator, and all that `make demo` needs.
$(BIN)/updaterd: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

# Test-only Python packages (pytest, hypothesis, hypercorn, mypy, ruff, ...).
$(VENV)/.test-extras: $(BIN)/updaterd
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(VENV)/.mutate-extras: $(VENV)/.test-extras
	$(BIN)/pip install -q -e '.[test,mutate]'
	touch $@

$(VENV)/.bench-extras: $(VENV)/.test-extras
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

venv: $(BIN)/updaterd

# The Debian tools the tests run for real; installs them as root on Debian, else names the command.
deps:
	@bash scripts/deps.sh

test: deps $(VENV)/.test-extras
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The package and the units under systemd as PID 1: a stock Debian 12 container (systemd-nspawn),
# the README's install steps (make deb here, apt install there), then the service as an operator
# drives it (tests/systemd).
test-systemd: $(VENV)/.test-extras
	UPDATERD_EXTRA_DEPS="systemd-nspawn:systemd-container debootstrap:debootstrap lintian:lintian" bash scripts/deps.sh
	bash scripts/nspawn-rootfs.sh
	bash scripts/nspawn-rootfs.sh trixie
	UPDATERD_TEST_SYSTEMD=1 $(BIN)/python -m pytest tests/systemd $(PYTEST_ARGS)

# Power cuts (catalogue row 58): a Debian 12 guest under qemu (TCG) updates an app while the
# host kills qemu at random instants; every boot after a cut checks the invariant (tests/power).
test-power: $(VENV)/.test-extras
	UPDATERD_EXTRA_DEPS="debootstrap:debootstrap qemu-system-x86_64:qemu-system-x86 busybox:busybox-static mkfs.ext4:e2fsprogs" bash scripts/deps.sh
	bash scripts/nspawn-rootfs.sh
	bash scripts/nspawn-rootfs.sh trixie
	bash scripts/power-kernel.sh
	UPDATERD_TEST_POWER=1 $(BIN)/python -m pytest -s tests/power $(PYTEST_ARGS)

# Guarded rollout on a fleet (tests/fleet): 60 real daemons, nginx, Debian's Prometheus (unpacked
# into .fleet/, no service started) and the real `updaterd rollout` controller; about 6 min.
test-fleet: deps $(VENV)/.test-extras
	bash scripts/prometheus.sh
	UPDATERD_TEST_FLEET=1 $(BIN)/python -m pytest -s tests/fleet $(PYTEST_ARGS)

# The fleet suite with its timeline kept, drawn into bench/rollout-fleet.png and .md (which
# `make bench` appends to bench/results.md).
fleet-figures: deps $(VENV)/.bench-extras
	bash scripts/prometheus.sh
	UPDATERD_TEST_FLEET=1 UPDATERD_FLEET_TIMELINE=bench/results/fleet-timeline.json $(BIN)/python -m pytest -s tests/fleet $(PYTEST_ARGS)
	$(BIN)/python -m bench.fleet_plot bench/results/fleet-timeline.json
	$(BIN)/python -m bench.fleet_plot bench/results/three-am-timeline.json

# The full counts of the randomized crash tests (catalogue row 57: 50 random kills).
test-long: deps $(VENV)/.test-extras
	UPDATERD_KILL_TRIALS=50 $(BIN)/python -m pytest -s $(PYTEST_ARGS)

# Mutation testing of the security-critical modules (cosmic-ray; scripts/mutate.py says how).
# The quick run mutates one module, chosen by the date, and fails if its score fell.
mutate: deps $(VENV)/.mutate-extras
	$(BIN)/python scripts/mutate.py $(MODULES)

mutate-quick: deps $(VENV)/.mutate-extras
	$(BIN)/python scripts/mutate.py --of-the-day

# The Debian package for the release this machine runs: dist/updaterd_VERSION_ARCH.deb (SPEC 12).
deb:
	bash scripts/build-deb.sh

demo: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

bench: deps $(VENV)/.bench-extras
	$(BIN)/python -m bench.run

bench-quick: deps $(VENV)/.bench-extras
	$(BIN)/python -m bench.run --quick

lint: $(VENV)/.test-extras
	$(BIN)/ruff check daemon ctl tests bench scripts
	$(BIN)/mypy

clean:
	rm -rf $(VENV) demo-run build dist *.egg-info
