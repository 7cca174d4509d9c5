# shellcheck shell=bash
# engine-ns.sh: what hack/docker-engine and hack/podman-engine share. A container engine runs
# here in its own mount + network namespace, pivoted into a cached Debian sid root, with a fresh
# cgroup2 mount so it sees a cgroup-v2 host on machines whose own cgroups are hybrid (see
# ../shared/ENVIRONMENT.md, "A real Docker that sees a cgroup-v2 host"). Everything the engine
# starts lives under one cgroup2 subtree and in those namespaces, which is how `down` finds and
# removes exactly what is its own.
#
# The sourcing script sets, before calling anything:
#   ENGINE_ROOT    the cached root (built once by engine_root_build, reused)
#   ENGINE_RUN     the run dir (pid files, logs, sockets), bound at the same path inside
#   ENGINE_CGROUP  the cgroup2 subtree (relative to the cgroup2 root); daemons go in its "daemons"
# and defines engine_log.

# shellcheck source=hack/lib/sid-rootfs.sh
source "$(dirname "${BASH_SOURCE[0]}")/sid-rootfs.sh"

# engine_cgroup2_root: where the host's cgroup2 hierarchy is mounted (hybrid: .../unified).
engine_cgroup2_root() {
  local m
  m=$(findmnt -n -t cgroup2 -o TARGET 2>/dev/null | head -n1) || true
  [[ -n "$m" ]] || { engine_log "no cgroup2 hierarchy mounted on the host"; return 1; }
  echo "$m"
}

# engine_root_build STAMP CHECK PACKAGES...: build $ENGINE_ROOT (sid minbase + PACKAGES) unless
# it carries STAMP and has the executable CHECK (a path inside the root). A function named
# engine_root_customize, if defined, runs on the new tree (argument: its path) before it is
# put in place.
engine_root_build() {
  local want=$1 check=$2 stamp tmp
  shift 2
  stamp=$(cat "$ENGINE_ROOT/.nixos2docker-engine" 2>/dev/null || true)
  if [[ "$stamp" == "$want" && -x "$ENGINE_ROOT$check" ]]; then
    return 0
  fi
  engine_log "building engine root $ENGINE_ROOT ($*)"
  mkdir -p "$(dirname "$ENGINE_ROOT")"
  tmp=$ENGINE_ROOT.tmp.$$
  rm -rf "$tmp"
  # The caller's trap removes a half-built root named here.
  # shellcheck disable=SC2034 # read by the sourcing script's trap
  ENGINE_ROOT_TMP=$tmp
  if ! sid_rootfs "$tmp" "$@"; then
    rm -rf "$tmp"; engine_log "engine root build failed"; return 1
  fi
  [[ -x "$tmp$check" ]] || { rm -rf "$tmp"; engine_log "engine root lacks $check"; return 1; }
  if declare -F engine_root_customize >/dev/null; then
    engine_root_customize "$tmp" || { rm -rf "$tmp"; engine_log "customizing the engine root failed"; return 1; }
  fi
  # The dirs the namespace binds over, and where the run dir is bound inside.
  mkdir -p "$tmp/sys/fs/cgroup" "$tmp/run" "$tmp/tmp" "$tmp/.oldroot"
  echo "$want" >"$tmp/.nixos2docker-engine"
  rm -rf "$ENGINE_ROOT"
  mv "$tmp" "$ENGINE_ROOT"
  # shellcheck disable=SC2034 # read by the sourcing script's trap
  ENGINE_ROOT_TMP=
}

# engine_pid_alive PID COMM: PID runs and its comm is COMM.
engine_pid_alive() {
  [[ -n "${1:-}" && -r "/proc/$1/comm" ]] && [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == "$2" ]]
}

# engine_ns_enter ROOT RUN CGROUP: the namespace set-up, run by the engine's first process inside
# `setsid unshare -m -n` (and -C for an engine that gets its own cgroup namespace): join the
# daemons' cgroup leaf, mount proc, sysfs, cgroup2, /dev, /run, /tmp and the run dir in ROOT,
# bring up loopback and pivot_root into ROOT. The caller then starts its daemons.
engine_ns_enter() {
  local root=$1 run=$2 cg=$3 cg2
  cg2=$(engine_cgroup2_root)
  # Every engine process goes into one cgroup2 leaf; containers go beside it.
  mkdir -p "$cg2$cg/daemons"
  echo $$ >"$cg2$cg/daemons/cgroup.procs"
  mount --make-rprivate /
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  # The fresh sysfs hides the host's hybrid tree; cgroup2 alone makes the engine see a v2 host.
  mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=0755 tmpfs "$root/run"
  mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
  mkdir -p "$root$run"
  mount --bind "$run" "$root$run"
  ip link set lo up
  cd "$root" || return 1
  pivot_root . .oldroot
  cd /
  umount -l /.oldroot
  export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
}

# Namespace inode numbers are reused as soon as a namespace is freed, so a recorded number may
# name some other job's namespace later. engine_pin_ns PID COMM holds the live engine process's
# mount and network namespaces open (fds 7 and 8) while `down` looks for stragglers in them;
# without a live process nothing is pinned and only the cgroup (whose path is ours alone) is used.
ENGINE_NS_MNT=
ENGINE_NS_NET=
engine_pin_ns() {
  local pid=$1 comm=$2
  # A zombie (killed, not yet reaped) has no namespaces left to pin.
  { exec 7<"/proc/$pid/ns/mnt" 8<"/proc/$pid/ns/net"; } 2>/dev/null || return 1
  # The process might have been replaced between the check and the open: check again.
  if ! engine_pid_alive "$pid" "$comm"; then engine_unpin_ns; return 1; fi
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

# engine_reap: after the engine's own processes were asked to stop, kill what is left of it in
# its pinned namespaces and its cgroup subtree, remove the subtree, unpin, and remove pid files
# and SOCKET (if given).
engine_reap() {
  local sock=${1:-} left p cg2 d n
  # Shims and monitors are reparented to the host's init and containers outlive them: find what
  # is left by namespace and by cgroup, and kill it.
  left=$( (engine_ns_pids; engine_cgroup_pids) | sort -u)
  if [[ -n "$left" ]]; then
    engine_log "killing leftover processes: $(for p in $left; do printf '%s(%s) ' "$p" "$(cat "/proc/$p/comm" 2>/dev/null)"; done)"
    for p in $left; do kill -KILL "$p" 2>/dev/null || true; done
  fi
  if cg2=$(engine_cgroup2_root 2>/dev/null) && [[ -d "$cg2$ENGINE_CGROUP" ]]; then
    # cgroup.kill kills the whole subtree; then remove directories deepest first.
    echo 1 >"$cg2$ENGINE_CGROUP/cgroup.kill" 2>/dev/null || true
    n=50
    while ((n-- > 0)) && [[ -n "$(engine_cgroup_pids)" ]]; do sleep 0.1; done
    while IFS= read -r d; do
      rmdir "$d" 2>/dev/null || engine_log "could not remove cgroup $d"
    done < <(find "$cg2$ENGINE_CGROUP" -depth -type d)
  fi
  n=50
  while ((n-- > 0)) && [[ -n "$(engine_ns_pids)" ]]; do sleep 0.1; done
  engine_unpin_ns
  rm -f "$ENGINE_RUN"/*.pid
  [[ -z "$sock" ]] || rm -f "$sock"
}

# engine_leftovers_common COMM...: print whatever of the engine still exists (processes in its
# cgroup or pinned namespaces, processes named COMM running a binary from its root, its cgroup,
# host mounts under its paths); exit 1 if anything does.
engine_leftovers_common() {
  local found=0 p cg2 comm c cg
  for p in $( (engine_cgroup_pids; engine_ns_pids) | sort -un); do
    echo "process $p $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"; found=1
  done
  for p in /proc/[0-9]*; do
    comm=
    read -r comm 2>/dev/null <"$p/comm" || continue
    for c in "$@"; do
      # shellcheck disable=SC2053 # COMM may be a glob (containerd-shim*)
      if [[ "$comm" == $c && "$(readlink "$p/exe" 2>/dev/null)" == "$ENGINE_ROOT"/* ]]; then
        # Another engine from the same root (hack/docker-engine's userns variant) is not ours.
        cg=$(sed -n 's/^0:://p' "$p/cgroup" 2>/dev/null)
        [[ "$cg" == /nixos2docker-* && "$cg" != "$ENGINE_CGROUP" && "$cg" != "$ENGINE_CGROUP"/* ]] && continue
        echo "process ${p#/proc/} $comm"; found=1
      fi
    done
  done
  if cg2=$(engine_cgroup2_root 2>/dev/null) && [[ -d "$cg2$ENGINE_CGROUP" ]]; then
    echo "cgroup $cg2$ENGINE_CGROUP"; found=1
  fi
  if grep -F -e " $ENGINE_ROOT" -e " $ENGINE_RUN" /proc/self/mountinfo; then found=1; fi
  return $((found))
}
