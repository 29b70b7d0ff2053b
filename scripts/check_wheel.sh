#!/usr/bin/env bash
# The repaired wheel in dist/ (`make wheel`) as a user without a compiler gets it:
#  1. cc, gcc, c++ and g++ are hidden behind failing stubs at the head of PATH, and building
#     the sdist there fails in them (so a pip install that needed a compiler would fail too);
#  2. a fresh virtual environment installs the wheel (runtime dependencies from the index);
#  3. the kernels report OpenMP and the threads of a parallel region (all cores by default);
#  4. `mireg register` runs on the sample pair that the wheel ships;
#  5. the wheel workflow's test subset ([tool.cibuildwheel] test-command) passes with pytest
#     as the only addition to the runtime.
# Usage: scripts/check_wheel.sh [folder]   (default /tmp/wheeltest, emptied first)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
WORK=${1:-/tmp/wheeltest}

TAG=$("$PYTHON" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
WHEEL=$(ls -t dist/napari_mireg-*-"$TAG"-"$TAG"-manylinux*.whl 2>/dev/null | head -n 1 || true)
SDIST=$(ls -t dist/napari_mireg-*.tar.gz 2>/dev/null | head -n 1 || true)
if [ -z "$WHEEL" ] || [ -z "$SDIST" ]; then
    echo "check_wheel: no $TAG manylinux wheel or sdist in dist/: run make wheel first" >&2
    exit 2
fi
WHEEL=$ROOT/$WHEEL
SDIST=$ROOT/$SDIST
echo "== wheel: $(basename "$WHEEL")"
rm -rf "$WORK"
mkdir -p "$WORK/no-compiler"

# Compilers the build would call, each replaced by a stub that logs the call and fails.
for name in cc gcc c++ g++; do
    cat > "$WORK/no-compiler/$name" <<EOF
#!/bin/sh
echo "$name \$*" >> "$WORK/compiler-calls.log"
echo "$name: no compiler on this machine (hidden by check_wheel.sh)" >&2
exit 127
EOF
    chmod +x "$WORK/no-compiler/$name"
done
"$PYTHON" -m venv "$WORK/venv"
export PATH="$WORK/no-compiler:$WORK/venv/bin:$PATH"
export PIP_DISABLE_PIP_VERSION_CHECK=1
hash -r

# pip, its output kept in pip.log and shown only when it fails
quiet_pip() {
    pip "$@" > "$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log" >&2; return 1; }
}

echo "== compilers on PATH"
for name in cc gcc c++ g++; do
    found=$(command -v "$name")
    [ "$found" = "$WORK/no-compiler/$name" ] || { echo "$name is not the stub: $found" >&2; exit 1; }
    echo "$name -> $found"
done
# The compiler setuptools takes from Python's build configuration must be one of the stubs.
CC_NAME=$(python -c 'import sysconfig; print(sysconfig.get_config_var("CC").split()[0])')
echo "Python's CC: $CC_NAME -> $(command -v "$CC_NAME")"
[ "$(command -v "$CC_NAME")" = "$WORK/no-compiler/$CC_NAME" ]

echo "== the sdist cannot build here (it would need the hidden compiler)"
if pip install --quiet --no-deps --no-cache-dir "$SDIST" > "$WORK/sdist-install.log" 2>&1; then
    echo "the sdist built without a compiler: the stubs do not hide it" >&2
    exit 1
fi
[ -s "$WORK/compiler-calls.log" ] || { echo "the sdist failed, but not in a compiler" >&2; exit 1; }
echo "sdist install failed as it should, in the stubs: $(cut -d' ' -f1 "$WORK/compiler-calls.log" \
    | tr '\n' ' ')(last: $(tail -n 1 "$WORK/compiler-calls.log" | grep -o -- '-c [^ ]*'))"
: > "$WORK/compiler-calls.log"

echo "== pip install the wheel"
quiet_pip install "$WHEEL"
[ ! -s "$WORK/compiler-calls.log" ] || { echo "installing the wheel called a compiler" >&2; exit 1; }
grep '^Successfully installed' "$WORK/pip.log" | fold -s -w 100
pip show napari-mireg | grep -E '^(Name|Version|Location):'

cd "$WORK"
echo "== kernels"
mireg --version
python - <<'EOF'
import os
from pathlib import Path

import napari_mireg
from napari_mireg.engine import fields

package = Path(napari_mireg.__file__).parent
threads = fields.openmp_threads()
expected = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
print(f"package: {package}")
print(f"openmp_enabled: {fields._mi.openmp_enabled()}; threads in a parallel region: {threads}")
libs = sorted(p.name for p in (package.parent / "napari_mireg.libs").glob("*"))
print(f"vendored libraries: {', '.join(libs)}")
assert "site-packages" in str(package), "not the installed wheel"
assert threads == expected, f"{threads} OpenMP threads, expected {expected}"
EOF
ldd "$(python -c 'import napari_mireg.engine._kernels._mi as m; print(m.__file__)')" | grep gomp

echo "== mireg register on the bundled sample"
SAMPLE=$(python -c 'import napari_mireg, pathlib; print(pathlib.Path(napari_mireg.__file__).parent / "sample_data")')
mireg register "$SAMPLE/fixed_t1.nii.gz" "$SAMPLE/moving_t2.nii.gz" \
    --fixed-labels "$SAMPLE/fixed_synthseg.nii.gz" \
    --moving-labels "$SAMPLE/moving_synthseg.nii.gz" --out "$WORK/register-output" 2> "$WORK/register.log"
python - "$WORK/register-output/report.json" <<'EOF'
import json
import sys

report = json.load(open(sys.argv[1]))
print(
    f"report: MI {report['mi_before']:.4f} -> {report['mi_after']:.4f}, folds {report['folds']}, "
    f"whole-brain Dice {report['overlap_before']['whole_dice']:.4f} -> "
    f"{report['overlap']['whole_dice']:.4f}, outputs {len(report['outputs'])}"
)
assert report["mi_after"] > report["mi_before"] and report["folds"] == 0
EOF

echo "== the wheel workflow's test subset (pytest added, nothing else)"
quiet_pip install pytest
[ ! -s "$WORK/compiler-calls.log" ] || { echo "installing pytest called a compiler" >&2; exit 1; }
"$PYTHON" - "$ROOT" > "$WORK/wheel-tests.sh" <<'EOF'
import shlex
import sys
import tomllib

root = sys.argv[1]
settings = tomllib.load(open(f"{root}/pyproject.toml", "rb"))["tool"]["cibuildwheel"]
for name, value in settings.get("test-environment", {}).items():
    print(f"export {name}={shlex.quote(value)}")
commands = settings["test-command"]
for command in [commands] if isinstance(commands, str) else commands:
    print(command.replace("{project}", shlex.quote(root)))
EOF
cat "$WORK/wheel-tests.sh"
bash -e "$WORK/wheel-tests.sh"
echo "== wheel check passed"
