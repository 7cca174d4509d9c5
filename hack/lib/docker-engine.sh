# shellcheck shell=bash
# docker-engine.sh: a real Docker engine (Debian sid docker.io 28, containerd, runc) that sees a
# cgroup-v2 host, on machines whose own cgroups are hybrid. Sourced by hack/docker-engine; see
# ../shared/ENVIRONMENT.md ("A real Docker that sees a cgroup-v2 host") for the measured recipe.
#
# Layout:
#   $ENGINE_ROOT  cached sid minbase root with the engine installed (built once, reused):
#                 ${NIXOS2DOCKER_CACHE:-~/.cache/nixos2docker}/engine/root. Docker's data-root
#                 (/var/lib/docker) lives inside it, so imported images survive a down/up.
#   $ENGINE_RUN   fixed run dir (default /run/nixos2docker-engine): pid files, logs, the socket.
#                 It is bind-mounted at the same path inside the engine's namespace, so the
#                 socket path is the same on both sides.
#   cgroup        every engine process (daemons, shims, containers) lives under one cgroup2
#                 subtree, $ENGINE_CGROUP (default /nixos2docker-engine): dockerd runs with
#                 --cgroup-parent there, so `down` can kill and remove exactly that subtree.

# shellcheck source=hack/lib/sid-rootfs.sh
source "$(dirname "${BASH_SOURCE[0]}")/sid-rootfs.sh"

ENGINE_CACHE=${NIXOS2DOCKER_CACHE:-$HOME/.cache/nixos2docker}/engine
ENGINE_ROOT=${NIXOS2DOCKER_ENGINE_ROOT:-$ENGINE_CACHE/root}
ENGINE_RUN=${NIXOS2DOCKER_ENGINE_RUN:-/run/nixos2docker-engine}
ENGINE_CGROUP=${NIXOS2DOCKER_ENGINE_CGROUP:-/nixos2docker-engine}
ENGINE_SOCK=$ENGINE_RUN/docker.sock
ENGINE_PACKAGES=(docker.io docker-cli containerd runc iptables)
# Bump when the recipe of the root changes, so a stale cached root is rebuilt.
ENGINE_RECIPE=v1

engine_log() { echo "docker-engine: $*" >&2; }

# engine_docker ARGS...: the docker CLI against this engine. The host's CLI if it has one,
# otherwise the engine's own CLI run inside the engine's namespaces.
# ENGINE_DOCKER_TIMEOUT (seconds, 0 = none) bounds each call.
engine_docker() {
  local t=${ENGINE_DOCKER_TIMEOUT:-0}
  if command -v docker >/dev/null 2>&1; then
    DOCKER_HOST=unix://$ENGINE_SOCK timeout "$t" docker "$@"
  else
    local pid
    pid=$(engine_dockerd_pid) || { engine_log "engine is not running"; return 1; }
    timeout "$t" nsenter -t "$pid" -m -n -- /usr/bin/docker -H "unix://$ENGINE_SOCK" "$@"
  fi
}

# engine_cgroup2_root: where the host's cgroup2 hierarchy is mounted (hybrid: .../unified).
engine_cgroup2_root() {
  local m
  m=$(findmnt -n -t cgroup2 -o TARGET 2>/dev/null | head -n1) || true
  [[ -n "$m" ]] || { engine_log "no cgroup2 hierarchy mounted on the host"; return 1; }
  echo "$m"
}

engine_root_stamp() {
  printf 'engine %s\n%s\n' "$ENGINE_RECIPE" "${ENGINE_PACKAGES[*]}" | sha256sum | cut -c1-16
}

# engine_root_ensure: build the cached engine root unless an up-to-date one exists.
engine_root_ensure() {
  local stamp want tmp
  want=$(engine_root_stamp)
  stamp=$(cat "$ENGINE_ROOT/.nixos2docker-engine" 2>/dev/null || true)
  if [[ "$stamp" == "$want" && -x "$ENGINE_ROOT/usr/sbin/dockerd" ]]; then
    return 0
  fi
  engine_log "building engine root $ENGINE_ROOT (${ENGINE_PACKAGES[*]})"
  mkdir -p "$(dirname "$ENGINE_ROOT")"
  tmp=$ENGINE_ROOT.tmp.$$
  rm -rf "$tmp"
  # sid_rootfs returns non-zero on failure; the caller's trap removes $tmp.
  ENGINE_ROOT_TMP=$tmp
  if ! sid_rootfs "$tmp" "${ENGINE_PACKAGES[@]}"; then
    rm -rf "$tmp"; engine_log "engine root build failed"; return 1
  fi
  [[ -x "$tmp/usr/sbin/dockerd" && -x "$tmp/usr/bin/docker" && -x "$tmp/usr/bin/containerd" ]] || {
    rm -rf "$tmp"; engine_log "engine root lacks dockerd/docker/containerd"; return 1; }
  # The dirs the namespace binds over, and where the run dir is bound inside.
  mkdir -p "$tmp/sys/fs/cgroup" "$tmp/run" "$tmp/tmp" "$tmp/.oldroot"
  echo "$want" >"$tmp/.nixos2docker-engine"
  rm -rf "$ENGINE_ROOT"
  mv "$tmp" "$ENGINE_ROOT"
  # shellcheck disable=SC2034 # read by hack/docker-engine's cleanup
  ENGINE_ROOT_TMP=''
}

# engine_pid_alive PID COMM: PID runs and its comm is COMM.
engine_pid_alive() {
  [[ -n "${1:-}" && -r "/proc/$1/comm" ]] && [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == "$2" ]]
}

engine_dockerd_pid() {
  local pid
  pid=$(cat "$ENGINE_RUN/dockerd.pid" 2>/dev/null) || return 1
  engine_pid_alive "$pid" dockerd || return 1
  echo "$pid"
}

# engine_ping: the daemon answers on its socket.
engine_ping() {
  [[ -S "$ENGINE_SOCK" ]] || return 1
  ENGINE_DOCKER_TIMEOUT=5 engine_docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

engine_status() {
  local pid
  if pid=$(engine_dockerd_pid) && engine_ping; then
    echo "running: dockerd pid $pid, containerd pid $(cat "$ENGINE_RUN/containerd.pid" 2>/dev/null), DOCKER_HOST=unix://$ENGINE_SOCK"
    return 0
  fi
  if [[ -e "$ENGINE_RUN/dockerd.pid" ]]; then
    echo "stopped (stale state in $ENGINE_RUN; run down)"
  else
    echo "stopped"
  fi
  return 1
}

# engine_inner ROOT RUN CGROUP: runs as the engine's PID namespace-less "init" inside
# `setsid unshare -m -n`; ends by exec'ing dockerd, so its PID is dockerd's.
engine_inner() {
  local root=$1 run=$2 cg=$3 cg2
  set -euo pipefail
  cg2=$(engine_cgroup2_root)
  # Every engine process goes into one cgroup2 leaf; containers go beside it (--cgroup-parent).
  mkdir -p "$cg2$cg/daemons"
  echo $$ >"$cg2$cg/daemons/cgroup.procs"
  mount --make-rprivate /
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  # The fresh sysfs hides the host's hybrid tree; cgroup2 alone makes Docker see a v2 host.
  mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=0755 tmpfs "$root/run"
  mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
  mkdir -p "$root$run"
  mount --bind "$run" "$root$run"
  ip link set lo up
  cd "$root"
  pivot_root . .oldroot
  cd /
  umount -l /.oldroot
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  containerd >>"$run/containerd.log" 2>&1 &
  echo $! >"$run/containerd.pid"
  echo $$ >"$run/dockerd.pid"
  exec dockerd -H "unix://$run/docker.sock" --containerd=/run/containerd/containerd.sock \
    --cgroup-parent="$cg" >>"$run/dockerd.log" 2>&1
}

engine_up() {
  if engine_dockerd_pid >/dev/null && engine_ping; then
    echo "DOCKER_HOST=unix://$ENGINE_SOCK"
    return 0
  fi
  if [[ -e "$ENGINE_RUN/dockerd.pid" || -e "$ENGINE_RUN/containerd.pid" ]]; then
    engine_log "stale state in $ENGINE_RUN: cleaning up first"
    engine_down
  fi
  engine_root_ensure
  mkdir -p "$ENGINE_RUN"
  rm -f "$ENGINE_SOCK" "$ENGINE_RUN"/*.pid "$ENGINE_RUN"/*.log
  local t0=$SECONDS pid i
  engine_log "starting dockerd + containerd in $ENGINE_ROOT"
  # 9>&- : the daemon must not inherit the lock fd of the calling script.
  setsid unshare -m -n -- "$ENGINE_SELF" __inner "$ENGINE_ROOT" "$ENGINE_RUN" "$ENGINE_CGROUP" \
    </dev/null >>"$ENGINE_RUN/engine.log" 2>&1 9>&- &
  pid=$!
  for ((i = 0; i < 600; i++)); do
    if [[ -S "$ENGINE_SOCK" ]] && engine_ping; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if ! engine_ping; then
    engine_log "engine did not come up; last lines of its logs:"
    tail -n 20 "$ENGINE_RUN/engine.log" "$ENGINE_RUN/containerd.log" "$ENGINE_RUN/dockerd.log" >&2 2>/dev/null || true
    engine_down || true
    return 1
  fi
  # down removes every container; any here outlived an engine that died without a down.
  local ids
  ids=$(ENGINE_DOCKER_TIMEOUT=10 engine_docker ps -aq 2>/dev/null || true)
  if [[ -n "$ids" ]]; then
    engine_log "removing containers left by an earlier engine: $(echo "$ids" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    ENGINE_DOCKER_TIMEOUT=60 engine_docker rm -f $ids >/dev/null 2>&1 || engine_log "docker rm failed"
  fi
  engine_log "up in $((SECONDS - t0)) s (dockerd pid $pid)"
  echo "DOCKER_HOST=unix://$ENGINE_SOCK"
}

# Namespace inode numbers are reused as soon as a namespace is freed, so a recorded number may
# name some other job's namespace later. engine_pin_ns holds the live dockerd's mount and network
# namespaces open (fds 7 and 8) while `down` looks for stragglers in them; without a live dockerd
# nothing is pinned and only the cgroup (whose path is ours alone) is used.
ENGINE_NS_MNT=
ENGINE_NS_NET=
engine_pin_ns() {
  local pid=$1
  # A zombie (killed, not yet reaped) has no namespaces left to pin.
  { exec 7<"/proc/$pid/ns/mnt" 8<"/proc/$pid/ns/net"; } 2>/dev/null || return 1
  # The daemon might have been replaced between the check and the open: check again.
  if ! engine_pid_alive "$pid" dockerd; then engine_unpin_ns; return 1; fi
  ENGINE_NS_MNT=$(stat -L -c %i "/proc/$$/fd/7")
  ENGINE_NS_NET=$(stat -L -c %i "/proc/$$/fd/8")
}
engine_unpin_ns() {
  exec 7<&- 8<&-
  ENGINE_NS_MNT='' ENGINE_NS_NET=''
}

# engine_ns_pids: host PIDs of processes in the pinned namespaces of the engine (none if unpinned).
engine_ns_pids() {
  [[ -n "$ENGINE_NS_MNT$ENGINE_NS_NET" ]] || return 0
  # One stat for all processes: a loop of readlinks over /proc takes seconds.
  stat -L -c '%i %n' /proc/[0-9]*/ns/mnt /proc/[0-9]*/ns/net 2>/dev/null |
    awk -v m="${ENGINE_NS_MNT:-x}" -v n="${ENGINE_NS_NET:-x}" -v self="$$" '
      ($1 == m && $2 ~ /\/mnt$/) || ($1 == n && $2 ~ /\/net$/) { split($2, a, "/"); if (a[3] != self) print a[3] }' |
    sort -un
}

# engine_cgroup_pids: host PIDs in the engine's cgroup subtree.
engine_cgroup_pids() {
  local cg2 d
  cg2=$(engine_cgroup2_root 2>/dev/null) || return 0
  d=$cg2$ENGINE_CGROUP
  [[ -d "$d" ]] || return 0
  find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null || true
}

# engine_wait_gone PID SECONDS: wait for PID to exit.
engine_wait_gone() {
  local pid=$1 n=$(($2 * 10))
  while ((n-- > 0)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

engine_down() {
  local pid cpid cg2 d p
  local t0=$SECONDS
  if pid=$(engine_dockerd_pid) && engine_ping; then
    local ids
    ids=$(ENGINE_DOCKER_TIMEOUT=10 engine_docker ps -aq 2>/dev/null || true)
    if [[ -n "$ids" ]]; then
      engine_log "removing containers: $(echo "$ids" | tr '\n' ' ')"
      # shellcheck disable=SC2086
      ENGINE_DOCKER_TIMEOUT=60 engine_docker rm -f $ids >/dev/null 2>&1 || engine_log "docker rm failed"
    fi
  fi
  pid=$(cat "$ENGINE_RUN/dockerd.pid" 2>/dev/null || true)
  if engine_pid_alive "$pid" dockerd; then
    engine_pin_ns "$pid" || true
    engine_log "stopping dockerd (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    engine_wait_gone "$pid" 20 || { engine_log "dockerd ignored SIGTERM: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
  fi
  cpid=$(cat "$ENGINE_RUN/containerd.pid" 2>/dev/null || true)
  if engine_pid_alive "$cpid" containerd; then
    engine_log "stopping containerd (pid $cpid)"
    kill -TERM "$cpid" 2>/dev/null || true
    engine_wait_gone "$cpid" 10 || { kill -KILL "$cpid" 2>/dev/null || true; }
  fi
  # Shims are reparented to the host's init and containers outlive them: find what is left by
  # namespace and by cgroup, and kill it.
  local left
  left=$( (engine_ns_pids; engine_cgroup_pids) | sort -u)
  if [[ -n "$left" ]]; then
    engine_log "killing leftover processes: $(for p in $left; do printf '%s(%s) ' "$p" "$(cat "/proc/$p/comm" 2>/dev/null)"; done)"
    for p in $left; do kill -KILL "$p" 2>/dev/null || true; done
  fi
  if cg2=$(engine_cgroup2_root 2>/dev/null) && [[ -d "$cg2$ENGINE_CGROUP" ]]; then
    # cgroup.kill kills the whole subtree; then remove directories deepest first.
    echo 1 >"$cg2$ENGINE_CGROUP/cgroup.kill" 2>/dev/null || true
    local n=50
    while ((n-- > 0)) && [[ -n "$(engine_cgroup_pids)" ]]; do sleep 0.1; done
    while IFS= read -r d; do
      rmdir "$d" 2>/dev/null || engine_log "could not remove cgroup $d"
    done < <(find "$cg2$ENGINE_CGROUP" -depth -type d)
  fi
  n=50
  while ((n-- > 0)) && [[ -n "$(engine_ns_pids)" ]]; do sleep 0.1; done
  engine_unpin_ns
  rm -f "$ENGINE_SOCK" "$ENGINE_RUN"/*.pid
  engine_log "down in $((SECONDS - t0)) s"
  if engine_leftovers >/dev/null; then return 0; fi
  engine_log "leftovers after down:"; engine_leftovers >&2 || true
  return 1
}

# engine_leftovers: print whatever of the engine still exists (processes, cgroups, socket,
# host mounts under its paths); exit 1 if anything does.
engine_leftovers() {
  local found=0 p cg2
  for p in $( (engine_cgroup_pids; engine_ns_pids) | sort -un); do
    echo "process $p $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"; found=1
  done
  local comm
  for p in /proc/[0-9]*; do
    comm=
    read -r comm 2>/dev/null <"$p/comm" || continue
    case "$comm" in
    dockerd | containerd | containerd-shim*)
      if [[ "$(readlink "$p/exe" 2>/dev/null)" == "$ENGINE_ROOT"/* ]]; then
        echo "process ${p#/proc/} $comm"; found=1
      fi
      ;;
    esac
  done
  if cg2=$(engine_cgroup2_root 2>/dev/null) && [[ -d "$cg2$ENGINE_CGROUP" ]]; then
    echo "cgroup $cg2$ENGINE_CGROUP"; found=1
  fi
  [[ -e "$ENGINE_SOCK" ]] && { echo "socket $ENGINE_SOCK"; found=1; }
  if grep -F -e " $ENGINE_ROOT" -e " $ENGINE_RUN" /proc/self/mountinfo; then found=1; fi
  return $((found))
}
