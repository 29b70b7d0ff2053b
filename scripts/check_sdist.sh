#!/usr/bin/env bash
# The sdist in dist/ built from source, as pip does where no wheel fits: with gcc the kernels
# get OpenMP; with a compiler that has no OpenMP they are built serially (the same results, on
# one thread). Each build goes into a fresh virtual environment, then `mireg --version` and
# tests/test_fields.py run against it.
# Usage: scripts/check_sdist.sh [folder]   (default /tmp/sdisttest, emptied first)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
WORK=${1:-/tmp/sdisttest}

SDIST=$(ls -t "$ROOT"/dist/napari_mireg-*.tar.gz 2>/dev/null | head -n 1 || true)
[ -n "$SDIST" ] || { echo "check_sdist: no sdist in dist/: run make wheel first" >&2; exit 2; }
echo "== sdist: $(basename "$SDIST")"
rm -rf "$WORK"
mkdir -p "$WORK/bin"

# gcc as it is without libgomp: any request for -fopenmp fails (the probe in setup.py too).
cat > "$WORK/bin/gcc-without-openmp" <<'EOF'
#!/bin/sh
for arg in "$@"; do
    [ "$arg" = -fopenmp ] && { echo "gcc-without-openmp: no OpenMP here" >&2; exit 1; }
done
exec gcc "$@"
EOF
chmod +x "$WORK/bin/gcc-without-openmp"

# build NAME EXPECTED [VAR=value ...]: install the sdist with the environment given, then
# check that `mireg --version` says EXPECTED and that the field kernels pass their tests.
build() {
    local venv=$WORK/$1 expected=$2
    shift 2
    echo "== $(basename "$venv"): $*"
    "$PYTHON" -m venv "$venv"
    env "$@" "$venv/bin/pip" install -v --no-cache-dir "$SDIST" pytest > "$venv.log" 2>&1 \
        || { tail -n 40 "$venv.log" >&2; exit 1; }
    grep -o "napari-mireg: building with OpenMP: .*" "$venv.log"
    (cd "$WORK" && "$venv/bin/mireg" --version) | tee "$venv.version"
    grep -q "$expected" "$venv.version" || { echo "expected: $expected" >&2; exit 1; }
    (cd "$WORK" && env "$@" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
        "$ROOT/tests/test_fields.py")
}

build with-gcc "kernels: OpenMP, " MIREG_EXPECT_OPENMP=1
build without-openmp "kernels: serial" CC="$WORK/bin/gcc-without-openmp"
echo "== sdist check passed"
