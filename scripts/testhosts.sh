#!/usr/bin/env bash
# Lab hosts on this machine, for trying (and testing) the multi-host lab before having hosts.
#
#   scripts/testhosts.sh up [NAME ...]   create hosts (default: every host of inventory/testhosts.yml)
#   scripts/testhosts.sh down            remove every test host: processes, mounts, namespaces, bridge
#   scripts/testhosts.sh status          one line per host: name, address, pid, sshd answering or not
#
# Each host has its own network namespace with an address on the bridge loadlab-br0 (198.18.0.0/24, the
# benchmark-testing range of RFC 2544; the controller is 198.18.0.1), its own mount, PID and UTS namespaces,
# a filesystem that is an overlay of this machine's root with a private upper layer (what a host writes
# stays on that host), its own cpuacct cgroup (so its CPU use can be told from the other hosts'), and an
# sshd on its address that accepts the key secrets/testhosts_key. The hosts see no project checkout, no
# virtualenv and no pip cache of this machine, and have no route beyond the bridge: what they run, they got
# from the controller over SSH. They share this machine's cores, memory and kernel.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state=/var/lib/loadlab-testhosts
bridge=loadlab-br0
bridge_address=198.18.0.1
cgroup=/sys/fs/cgroup/cpuacct/loadlab-testhosts
key="$here/secrets/testhosts_key"

# name -> address: the hosts inventory/testhosts.yml names (keep the two in step).
declare -A address=(
  [target1]=198.18.0.11 [target2]=198.18.0.12 [data1]=198.18.0.21
  [loadgen1]=198.18.0.31 [loadgen2]=198.18.0.32 [monitor1]=198.18.0.41
)
order=(target1 target2 data1 loadgen1 loadgen2 monitor1)

die() { echo "testhosts: $*" >&2; exit 2; }

need_root() { [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, mounts)"; }

# Paths a host must not see (created as overlay whiteouts): this checkout, its venv, pip caches, and the
# lab's own folders, which the controller may have from a one-host lab.
masked_paths() {
  # root's home goes whole: its shell start-up files, tool caches and version managers are the
  # controller's, not a fresh host's.
  printf '%s\n' /root "$HOME" "$here" /etc/loadlab /var/lib/loadlab /var/log/loadlab \
    /run/loadlab /opt/loadlab "$state"
  # A virtualenv outside the checkout (CI's, a user's) is masked too.
  if [ -n "${VIRTUAL_ENV:-}" ]; then echo "$VIRTUAL_ENV"; fi
}

ensure_key() {
  mkdir -p "$here/secrets"
  chmod 0700 "$here/secrets"
  if [ ! -f "$key" ]; then
    ssh-keygen -q -t ed25519 -N '' -C loadlab-testhosts -f "$key"
  fi
  chmod 0600 "$key" "$key.pub"
}

ensure_bridge() {
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
    ip addr add "$bridge_address/24" dev "$bridge"
  fi
  ip link set "$bridge" up
}

host_pid() { cat "$state/$1/pid" 2>/dev/null || true; }

alive() {
  local pid
  pid="$(host_pid "$1")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# Runs inside the host's new mount, PID and UTS namespaces, as its first process.
host_init() {
  local name="$1" addr="$2" root="$state/$1"
  hostname "$name"
  mount --make-rprivate /
  # The upper layer lives on a tmpfs: an overlay's upper directory may not sit inside its lower one.
  mkdir -p "$root/layer"
  mount -t tmpfs -o mode=0755 "layer-$name" "$root/layer"
  mkdir -p "$root/layer/upper" "$root/layer/work" "$root/merged"
  local path masked=()
  while read -r path; do
    [ -e "$path" ] || continue
    for prefix in "${masked[@]}"; do
      [[ "$path" == "$prefix" || "$path" == "$prefix"/* ]] && continue 2
    done
    masked+=("$path")
    mkdir -p "$root/layer/upper$(dirname "$path")"
    mknod "$root/layer/upper$path" c 0 0 # a whiteout: the path does not exist on this host
  done < <(masked_paths)
  mount -t overlay "overlay-$name" \
    -o "lowerdir=/,upperdir=$root/layer/upper,workdir=$root/layer/work" "$root/merged"
  local m="$root/merged"
  mount -t proc proc "$m/proc"
  mount --rbind /dev "$m/dev"
  mount --rbind /sys "$m/sys"
  # `ip netns exec` gave this namespace a fresh /sys without cgroups: mount the cpuacct hierarchy again, so
  # the host's exporter can read its own cgroup.
  mount -t tmpfs -o mode=0755 cgroup "$m/sys/fs/cgroup"
  mkdir -p "$m/sys/fs/cgroup/cpuacct"
  mount -t cgroup -o cpuacct cpuacct "$m/sys/fs/cgroup/cpuacct"
  mount -t tmpfs -o mode=0755 run "$m/run"
  mount -t tmpfs -o mode=1777 tmp "$m/tmp"
  mount -t tmpfs -o mode=1777 shm "$m/dev/shm"
  mkdir -p "$m/run/sshd" "$m/root/.ssh"
  chmod 0700 "$m/root" "$m/root/.ssh"
  cp "$key.pub" "$m/root/.ssh/authorized_keys"
  chmod 0600 "$m/root/.ssh/authorized_keys"
  echo "$name" >"$m/etc/hostname"
  printf '127.0.0.1 localhost\n%s %s\n' "$addr" "$name" >"$m/etc/hosts"
  for other in "${order[@]}"; do
    [ "$other" = "$name" ] || printf '%s %s\n' "${address[$other]}" "$other" >>"$m/etc/hosts"
  done
  # No DNS: a test host reaches nothing past the lab bridge, so a name it looks up fails at once instead of
  # waiting on a nameserver it cannot reach (apt gives up on its sources in seconds, as on an air-gapped host).
  rm -f "$m/etc/resolv.conf"
  echo "# test host: no nameserver (no route past the lab bridge)" >"$m/etc/resolv.conf"
  exec chroot "$m" /usr/sbin/sshd -D -e \
    -o "ListenAddress=$addr" -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no \
    -o KbdInteractiveAuthentication=no -o UsePAM=no -o MaxStartups=100 -o MaxSessions=100 \
    -o "PidFile=/run/sshd.pid" -o "AuthorizedKeysFile=.ssh/authorized_keys"
}

up_one() {
  local name="$1" addr="${address[$1]:-}"
  [ -n "$addr" ] || die "unknown host $name (known: ${order[*]})"
  if alive "$name"; then
    echo "testhosts: $name is up at $addr"
    return
  fi
  local ns="lab-$name" veth="lv-$name"
  ip netns del "$ns" 2>/dev/null || true
  ip link del "$veth" 2>/dev/null || true
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$bridge" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$bridge_address"
  mkdir -p "$state/$name" "$cgroup/$name"
  # The host's first process: killing it (down) ends every process of the host.
  setsid bash -c 'echo $$ >"$1/tasks"; shift; exec "$@"' _ "$cgroup/$name" \
    ip netns exec "$ns" unshare --mount --pid --uts --fork --kill-child \
    bash "$here/scripts/testhosts.sh" _init "$name" "$addr" \
    >"$state/$name/console.log" 2>&1 </dev/null &
  echo $! >"$state/$name/pid"
}

wait_ssh() {
  local name="$1" addr="${address[$1]}" i
  for i in $(seq 1 100); do
    if ssh -i "$key" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o ConnectTimeout=2 -o LogLevel=ERROR "root@$addr" true 2>/dev/null; then
      echo "testhosts: $name is up at $addr (ssh -i secrets/testhosts_key root@$addr)"
      return
    fi
    alive "$name" || die "$name did not start: $(tail -3 "$state/$name/console.log" 2>/dev/null)"
    sleep 0.2
  done
  die "$name: sshd does not answer at $addr:22 ($(tail -3 "$state/$name/console.log" 2>/dev/null))"
}

cmd_up() {
  need_root
  command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || die "sshd is missing: run scripts/bootstrap.sh"
  [ -d /sys/fs/cgroup/cpuacct ] || die "no cpuacct cgroup at /sys/fs/cgroup/cpuacct"
  local names=("$@")
  ((${#names[@]})) || names=("${order[@]}")
  ensure_key
  ensure_bridge
  mkdir -p "$state" "$cgroup"
  local name
  for name in "${names[@]}"; do up_one "$name"; done
  for name in "${names[@]}"; do wait_ssh "$name"; done
}

cmd_down() {
  need_root
  local name pid dir
  for dir in "$state"/*/; do
    [ -d "$dir" ] || continue
    name="$(basename "$dir")"
    pid="$(host_pid "$name")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  # Every process of a host is in its cgroup: none may outlive the host.
  if [ -d "$cgroup" ]; then
    for dir in "$cgroup"/*/; do
      [ -d "$dir" ] || continue
      for i in $(seq 1 50); do
        [ -s "$dir/tasks" ] || break
        xargs -r kill -KILL <"$dir/tasks" 2>/dev/null || true
        sleep 0.1
      done
      # A killed process leaves its cgroup only once it has fully exited: wait for that.
      for i in $(seq 1 50); do rmdir "$dir" 2>/dev/null && break; sleep 0.1; done
    done
    for i in $(seq 1 50); do rmdir "$cgroup" 2>/dev/null && break; sleep 0.1; done
  fi
  for name in $(ip netns list 2>/dev/null | awk '$1 ~ /^lab-/ {print $1}'); do
    ip netns del "$name" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
  rm -rf "$state"
  echo "testhosts: down"
}

cmd_status() {
  local name any=0
  for name in "${order[@]}"; do
    [ -d "$state/$name" ] || continue
    any=1
    if alive "$name"; then
      echo "$name ${address[$name]} up pid $(host_pid "$name")"
    else
      echo "$name ${address[$name]} down"
    fi
  done
  ((any)) || echo "testhosts: none (scripts/testhosts.sh up)"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  _init) shift; host_init "$@" ;;
  *) die "usage: scripts/testhosts.sh up [NAME ...] | down | status" ;;
esac
