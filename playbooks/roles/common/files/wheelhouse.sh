#!/usr/bin/env bash
# Controller side of the remote install: the project's wheel and every dependency it needs, as wheels, in
# one tar that lab hosts install from with no package registry (air-gapped hosts are common in real labs).
#
#   wheelhouse.sh PYTHON HOST_PYTHON PROJECT_DIR OUT_DIR
#
# Versions are pinned to what PYTHON's environment has (the controller's venv, where the tests ran), so
# every host runs what the controller runs. Dependencies are resolved by HOST_PYTHON (the interpreter the
# hosts' virtualenvs are made with, /usr/bin/python3 of the same Debian release), so markers such as
# `python_full_version < "3.11.3"` are read as a host reads them. The tar is rewritten only when its content changed: the same
# sources give the same bytes, so a rerun of the playbook copies nothing.
set -euo pipefail
python="$1" host_python="$2" project="$3" out="$4"
wheels="$out/wheelhouse"
mkdir -p "$wheels"
export SOURCE_DATE_EPOCH=315532800 PIP_DISABLE_PIP_VERSION_CHECK=1
constraints="$out/constraints.txt"
"$python" -m pip freeze --exclude-editable | grep -v '^loadlab[= ]' >"$constraints.new"
mv "$constraints.new" "$constraints"
log="$out/wheelhouse.log"
# The same sources and pins as the tar was built from: nothing to build (a rerun spends no time here).
stamp="$out/wheelhouse.stamp"
sources="$(
  { cat "$constraints"; "$host_python" --version; } | sha256sum
  cd "$project" && find . -path ./.git -prune -o -path ./.venv -prune -o -path ./build -prune \
    -o -name __pycache__ -prune -o -path ./results -prune -o -path ./secrets -prune \
    -o -type f \( -path './loadlab/*' -o -path './exporters/*' -o -name pyproject.toml \) -print0 |
    sort -z | xargs -0 sha256sum
)"
if [ -f "$out/wheelhouse.tar" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(sha256sum <<<"$sources")" ]; then
  echo "wheelhouse unchanged: $out/wheelhouse.tar"
  exit 0
fi
fail() { echo "wheelhouse: $1 (see $log)" >&2; tail -5 "$log" >&2; exit 1; }
# shellcheck source=wheelhouse_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/wheelhouse_lib.sh"
rm -f "$wheels"/loadlab-*.whl
"$python" -m pip wheel --no-deps --wheel-dir "$wheels" "$project" >"$log" 2>&1 ||
  fail "cannot build the project's wheel"
project_wheel="$(ls "$wheels"/loadlab-*.whl)"
resolve "$project_wheel" --find-links "$wheels" --constraint "$constraints"
pack wheelhouse
