#!/usr/bin/env bash
# Regenerates gen/ from proto/ with the pinned grpcio-tools (its bundled protoc and the grpc plugin),
# so the output depends only on requirements.lock, never on a protoc found on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf gen/c2d
mkdir -p gen
wkt=$("$PY" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
mapfile -t protos < <(cd proto && find c2d -name '*.proto' | LC_ALL=C sort)
(cd proto && "$OLDPWD/$PY" -m grpc_tools.protoc -I. -I"$wkt" \
  --python_out=../gen --pyi_out=../gen --grpc_python_out=../gen "${protos[@]}")
# Regular packages (not namespace ones), so mypy and setuptools find every module.
find gen/c2d -type d -exec touch {}/__init__.py \;
