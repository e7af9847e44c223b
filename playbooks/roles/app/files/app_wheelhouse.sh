#!/usr/bin/env bash
# Controller side of installing the user's own app (app_source): its wheel and every dependency's, as one
# tar the app hosts install from with no package registry.
#
#   app_wheelhouse.sh PYTHON HOST_PYTHON SOURCE OUT_DIR [FIND_LINKS]
#
# SOURCE is a project folder (built into a wheel here), a wheel, or an sdist. Dependencies are resolved by
# HOST_PYTHON (the interpreter the hosts' virtualenvs are made with), from FIND_LINKS and what OUT_DIR holds
# first and from the package index only for what is missing. OUT_DIR/app-wheel.txt names the app's wheel.
# The same sources give the same tar, byte for byte, and a rerun with nothing changed builds nothing.
set -euo pipefail
python="$1" host_python="$2" source="$3" out="$4" links="${5:-}"
wheels="$out/wheelhouse"
log="$out/wheelhouse.log"
mkdir -p "$wheels"
export SOURCE_DATE_EPOCH=315532800 PIP_DISABLE_PIP_VERSION_CHECK=1
fail() { echo "app wheelhouse: $1 (see $log)" >&2; tail -5 "$log" >&2; exit 1; }
# shellcheck source=../../common/files/wheelhouse_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../common/files/wheelhouse_lib.sh"
[ -e "$source" ] || { echo "app wheelhouse: app_source $source does not exist" >&2; exit 1; }

stamp="$out/wheelhouse.stamp"
sources="$(
  "$host_python" --version
  if [ -d "$source" ]; then
    cd "$source" && find . -name .git -prune -o -name .venv -prune -o -name build -prune -o -name dist -prune \
      -o -name __pycache__ -prune -o -name '*.egg-info' -prune -o -type f -print0 | sort -z | xargs -0 sha256sum
  else
    sha256sum "$source"
  fi
)"
if [ -f "$out/wheelhouse.tar" ] && [ -f "$out/app-wheel.txt" ] && [ -f "$stamp" ] &&
  [ "$(cat "$stamp")" = "$(sha256sum <<<"$sources")" ]; then
  echo "app wheelhouse unchanged: $out/wheelhouse.tar"
  exit 0
fi

built="$out/built"
rm -rf "$built" && mkdir -p "$built"
case "$source" in
  *.whl) cp "$source" "$built/" ;;
  *)
    from="$source"
    if [ -d "$source" ]; then # built from a copy: the user's folder gets no build/ or .egg-info
      from="$out/src"
      rm -rf "$from" && mkdir -p "$from"
      tar -C "$source" --exclude=.git --exclude=.venv --exclude=build --exclude=dist --exclude=__pycache__ \
        --exclude='*.egg-info' -cf - . | tar -C "$from" -xf -
    fi
    "$python" -m pip wheel --no-deps --wheel-dir "$built" "$from" >"$log" 2>&1 ||
      fail "cannot build a wheel of $source"
    ;;
esac
app_wheel="$(ls "$built"/*.whl)"
name="$(basename "$app_wheel")"
rm -f "$wheels/${name%%-*}"-*.whl
cp "$app_wheel" "$wheels/"

find_links=(--find-links "$wheels")
[ -n "$links" ] && [ -d "$links" ] && find_links+=(--find-links "$links")
resolve "$wheels/$name" "${find_links[@]}"
echo "$name" >"$out/app-wheel.txt"
pack "app wheelhouse"
