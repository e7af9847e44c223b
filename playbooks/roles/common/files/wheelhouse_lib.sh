# Shared by wheelhouse.sh (the project's wheelhouse) and the app role's app_wheelhouse.sh (your app's): the
# steps both take once their top wheel is in "$wheels". Sourced; expects out, wheels, log, stamp, sources,
# host_python and a fail function.

# resolve TOP_WHEEL PIP_ARGS...: every dependency of TOP_WHEEL as a wheel in "$wheels", resolved by host_python
# (the interpreter the hosts' virtualenvs are made with), offline first and from the registry only for what
# is missing.
resolve() {
  local top="$1"
  shift
  local resolver="$out/resolver-venv"
  if [ ! -x "$resolver/bin/python" ]; then
    "$host_python" -m venv "$resolver" >>"$log" 2>&1 || fail "cannot make a virtualenv with $host_python"
  fi
  if ! "$resolver/bin/python" -m pip wheel --no-index "$@" --wheel-dir "$wheels" "$top" >>"$log" 2>&1; then
    "$resolver/bin/python" -m pip wheel --prefer-binary "$@" --wheel-dir "$wheels" "$top" >>"$log" 2>&1 ||
      fail "cannot fetch the wheels of the dependencies"
  fi
}

# pack WHAT: "$wheels" as one tar, rewritten only when its bytes change (the same sources give the same tar,
# so a rerun of the playbook copies nothing), and the sources' stamp that lets the next run skip the build.
pack() {
  tar --sort=name --mtime=@315532800 --owner=0 --group=0 --numeric-owner \
    -C "$out" -cf "$out/wheelhouse.tar.new" wheelhouse
  sha256sum <<<"$sources" >"$stamp"
  if cmp -s "$out/wheelhouse.tar.new" "$out/wheelhouse.tar"; then
    rm "$out/wheelhouse.tar.new"
    echo "$1 unchanged: $out/wheelhouse.tar"
  else
    mv "$out/wheelhouse.tar.new" "$out/wheelhouse.tar"
    echo "$1 updated: $out/wheelhouse.tar"
  fi
}
