# Set-up and entry points. `make demo` and `make test` do everything on a fresh machine:
# Debian's Xvfb and Qt xcb libraries (when root and missing), a virtual environment, the
# package with its Cython kernels and its test extra.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Xvfb and the libraries Qt's xcb platform plugin needs (napari draws through it).
DEBIAN_PACKAGES := xvfb xauth libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 \
	libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 \
	libxcb-shape0 libxcb-cursor0 libdbus-1-3 libgl1 libegl1 libfontconfig1

# Known-deformation check (error against the true field): python -m napari_mireg.demo
.PHONY: demo test bench system-packages install clean

SAMPLE := src/napari_mireg/sample_data

# The main job: `mireg register` on the bundled sample pair, outputs in demo-output/.
demo: $(STAMP)
	$(BIN)/mireg register $(SAMPLE)/fixed_t1.nii.gz $(SAMPLE)/moving_t2.nii.gz \
		--fixed-labels $(SAMPLE)/fixed_synthseg.nii.gz \
		--moving-labels $(SAMPLE)/moving_synthseg.nii.gz --out demo-output

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_metric.py

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard src/napari_mireg/*.pyx src/napari_mireg/*.pxd src/napari_mireg/*.h)
	$(MAKE) system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

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
	rm -rf $(VENV) build src/*.egg-info src/napari_mireg/*.so src/napari_mireg/_mi.c src/napari_mireg/_fields.c
