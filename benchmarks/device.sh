#!/usr/bin/env bash
# The device run of issue 14: the GPU layout on a real GPU, the CPU layout on all cores.
#
# Command (on the device machine, from the repository root; one call, meant to fit ~8 min
# through device.py's --method-budget, not yet timed there):
#
#     bash benchmarks/device.sh            # the full run; results in $OUT/device.json
#     bash benchmarks/device.sh --small    # dry run (5k-cell graphs, 1 repeat, 50 epochs)
#
# with the device tool's carry = [".whl", ".bench_cache/mnist70k_rep.npy",
# ".bench_cache/mnist70k_labels.npy"] (23.2 + 13.5 MiB, plus the 6.6 MiB working tree).
# Any further arguments go to benchmarks/device.py (e.g. --skip-synth, --repeats 2).
#
# What it does:
#   1. Installs the carried wheels from .whl/ into /tmp/site (no network there) and puts
#      /tmp/site and src/ on PYTHONPATH: annumap runs from src/, nothing is built. Without a
#      .whl/ folder (e.g. the dry run here) it uses the current environment and says so.
#   2. Prints the versions it will use (Python, numpy, numba, anndata, CuPy, the GPU).
#   3. pytest -m gpu tests/test_gpu.py (CuPy on the device), then the rest of tests/test_gpu.py.
#      A failing test is reported and the run goes on (the timings are still wanted).
#   4. benchmarks/device.py with fresh numba and CuPy kernel caches (so "cold" is cold):
#      method='cupy' vs method='umap' on MNIST 70k, CPU thread scaling 1-16 on MNIST, then the
#      1M-cell synthetic graph (last: the longest, the part a time-out would cut), with quality,
#      global shape and seed reproducibility; JSON to $OUT/device.json after each section.
#
# Before the run, here (on the development machine, with its .venv):
#
#     .venv/bin/python benchmarks/device.py --prepare   # .bench_cache/mnist70k_{rep,labels}.npy
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#         --platform manylinux2014_x86_64 -d .whl \
#         anndata==0.12.19 array-api-compat legacy-api-wrap natsort packaging scverse-misc \
#         session-info2 typing-extensions zarr==3.1.6 donfig pyyaml google-crc32c numcodecs \
#         pynndescent==0.7.0 joblib cloudpickle pytest iniconfig pluggy pygments hypothesis \
#         sortedcontainers \
#         scanpy==1.11.5 umap-learn==0.5.12 networkx patsy seaborn statsmodels formulaic \
#         interface-meta narwhals wrapt
#
# The device already has CuPy (cupy-cuda13x 14.x), numba (with llvmlite), numpy, scipy,
# scikit-learn, h5py, pandas, matplotlib and tqdm on Python 3.12. The first four lines of
# packages are what annumap and its tests need beyond that (anndata and its dependencies,
# pynndescent + joblib with joblib's cloudpickle, pytest, hypothesis): 22 wheels, 6.2 MiB. The
# last two lines are the oracle of the gpu quality test (scanpy 1.11.5 and umap-learn 0.5.12
# with the dependencies the device lacks), 10 more wheels: 32 wheels, 23.2 MiB in all, most of
# it statsmodels (11.5 MiB). Checked here: every Requires-Dist of the 32 wheels (for CPython
# 3.12 on Linux) is among them or the device's packages; installing them needs the device.
# anndata 0.12 wants pandas < 3; should the device's pandas be 3.x, add pandas==2.3.3 to the
# list (about 12 MiB) and the wheels in /tmp/site take precedence.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/out/device}  # out/ is git-ignored: a dry run never lands in benchmarks/results
mkdir -p "$OUT"
PY=${PYTHON:-python3}

echo "== environment"
if compgen -G ".whl/*.whl" > /dev/null; then
    echo "installing $(ls .whl/*.whl | wc -l) carried wheels from .whl/ into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$ROOT/src
else
    if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
    echo "no .whl/ folder: using the current environment ($PY), annumap from src/"
    export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" - <<'EOF'
import importlib.metadata as md, importlib.util, platform
print("python", platform.python_version())
for mod, dist in (("numpy", "numpy"), ("scipy", "scipy"), ("numba", "numba"),
                  ("sklearn", "scikit-learn"), ("pandas", "pandas"), ("anndata", "anndata"),
                  ("pynndescent", "pynndescent"), ("annumap", None), ("pytest", "pytest"),
                  ("scanpy", "scanpy"), ("umap", "umap-learn"), ("cupy", None)):
    spec = importlib.util.find_spec(mod)
    if spec is None:
        print(f"{mod:12s} missing")
        continue
    if dist is None:  # annumap runs from src/; CuPy's distribution name varies
        version = importlib.import_module(mod).__version__
    else:
        version = md.version(dist)
    print(f"{mod:12s} {version:12s} {spec.origin}")
EOF
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader

SMALL=0
for a in "$@"; do [ "$a" = "--small" ] && SMALL=1; done

echo "== pytest -m gpu tests/test_gpu.py"
"$PY" -m pytest -m gpu tests/test_gpu.py -v -p no:cacheprovider --junitxml="$OUT/pytest_gpu.xml"
echo "pytest -m gpu exit status: $?"
if [ "$SMALL" = 0 ]; then
    echo "== pytest -m 'not gpu' tests/test_gpu.py"
    "$PY" -m pytest -m "not gpu" tests/test_gpu.py -q -p no:cacheprovider \
        --junitxml="$OUT/pytest_rest.xml"
    echo "pytest (rest of test_gpu.py) exit status: $?"
else
    echo "(--small: the rest of tests/test_gpu.py is left out of the dry run)"
fi

echo "== benchmarks/device.py $*"
COLD=$(mktemp -d)
NUMBA_CACHE_DIR=$COLD/numba CUPY_CACHE_DIR=$COLD/cupy \
    "$PY" benchmarks/device.py --out "$OUT/device.json" "$@"
rc=$?
echo "benchmarks/device.py exit status: $rc"
exit $rc
