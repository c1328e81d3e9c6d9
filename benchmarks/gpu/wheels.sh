#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the wheels that benchmarks/gpu/checks.sh installs on
# a device machine (no network there), into .whl/ at the repository root (git-ignored), built
# for its Python 3.12 on x86-64. antlr4-python3-runtime 4.9.3 (omegaconf's parser) ships no
# wheel, so it is built here; it is pure Python.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl
grep -v -e '^#' -e '^$' benchmarks/gpu/wheels.txt | grep -v '^antlr4-python3-runtime' > .whl/requirements.txt
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl -r .whl/requirements.txt
"$PY" -m pip wheel -q --no-deps -w .whl "$(grep '^antlr4-python3-runtime' benchmarks/gpu/wheels.txt)"
rm .whl/requirements.txt
du -sh .whl
