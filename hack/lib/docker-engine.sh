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
#   image store   classic (overlay2 graph driver: what an upgraded Docker keeps) or containerd
#                 (containerd-snapshotter: "features": {"containerd-snapshotter": true}); `up`
#                 writes that daemon.json into $ENGINE_RUN (dockerd --config-file), so the cached
#                 root stays the same for every store. Both stores live side by side in the root.

# shellcheck source=hack/lib/engine-ns.sh
source "$(dirname "${BASH_SOURCE[0]}")/engine-ns.sh"

ENGINE_CACHE=${NIXOS2DOCKER_CACHE:-$HOME/.cache/nixos2docker}/engine
ENGINE_ROOT=${NIXOS2DOCKER_ENGINE_ROOT:-$ENGINE_CACHE/root}
# NIXOS2DOCKER_ENGINE_VARIANT=userns: a second engine beside the default one, from the same root,
# with dockerd --userns-remap=default (container root is an unprivileged host UID from
# dockremap's subuid range): its own run dir, cgroup, data-root and containerd root.
ENGINE_VARIANT=${NIXOS2DOCKER_ENGINE_VARIANT:-}
ENGINE_DAEMON_ARGS=()
ENGINE_CONTAINERD_ARGS=()
case $ENGINE_VARIANT in
"") ;;
userns)
  ENGINE_DAEMON_ARGS=(--userns-remap=default --data-root=/var/lib/docker-userns)
  ENGINE_CONTAINERD_ARGS=(--root=/var/lib/containerd-userns)
  ;;
*) echo "docker-engine: unknown NIXOS2DOCKER_ENGINE_VARIANT=$ENGINE_VARIANT (userns)" >&2; exit 2 ;;
esac
ENGINE_RUN=${NIXOS2DOCKER_ENGINE_RUN:-/run/nixos2docker-engine${ENGINE_VARIANT:+-$ENGINE_VARIANT}}
ENGINE_CGROUP=${NIXOS2DOCKER_ENGINE_CGROUP:-/nixos2docker-engine${ENGINE_VARIANT:+-$ENGINE_VARIANT}}
ENGINE_SOCK=$ENGINE_RUN/docker.sock
ENGINE_STORES=(classic containerd)
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

engine_root_stamp() {
  printf 'engine %s\n%s\n' "$ENGINE_RECIPE" "${ENGINE_PACKAGES[*]}" | sha256sum | cut -c1-16
}

# engine_root_ensure: build the cached engine root unless an up-to-date one exists.
engine_root_ensure() {
  engine_root_build "$(engine_root_stamp)" /usr/sbin/dockerd "${ENGINE_PACKAGES[@]}" || return 1
  [[ -x "$ENGINE_ROOT/usr/bin/docker" && -x "$ENGINE_ROOT/usr/bin/containerd" ]] || {
    engine_log "engine root lacks docker/containerd"; return 1; }
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

# engine_store: the image store the engine was started with.
engine_store() {
  cat "$ENGINE_RUN/store" 2>/dev/null || echo classic
}

engine_status() {
  local pid
  if pid=$(engine_dockerd_pid) && engine_ping; then
    echo "running: dockerd pid $pid, containerd pid $(cat "$ENGINE_RUN/containerd.pid" 2>/dev/null), image store $(engine_store), DOCKER_HOST=unix://$ENGINE_SOCK"
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
  local root=$1 run=$2 cg=$3
  set -euo pipefail
  engine_ns_enter "$root" "$run" "$cg"
  containerd "${ENGINE_CONTAINERD_ARGS[@]}" >>"$run/containerd.log" 2>&1 &
  echo $! >"$run/containerd.pid"
  echo $$ >"$run/dockerd.pid"
  # Containers go beside the daemons' leaf (--cgroup-parent).
  exec dockerd -H "unix://$run/docker.sock" --containerd=/run/containerd/containerd.sock \
    --cgroup-parent="$cg" --config-file="$run/daemon.json" "${ENGINE_DAEMON_ARGS[@]}" >>"$run/dockerd.log" 2>&1
}

# engine_up [STORE]: start the engine with image store STORE (default classic); one running with
# the other store is restarted.
engine_up() {
  local store=${1:-classic}
  if [[ " ${ENGINE_STORES[*]} " != *" $store "* ]]; then
    engine_log "unknown image store '$store' (${ENGINE_STORES[*]})"; return 2
  fi
  if [[ $store == containerd && -n $ENGINE_VARIANT ]]; then
    # Docker: "The containerd image store is not available when using user namespace remapping".
    engine_log "the containerd image store does not work with NIXOS2DOCKER_ENGINE_VARIANT=$ENGINE_VARIANT"; return 2
  fi
  if engine_dockerd_pid >/dev/null && engine_ping; then
    if [[ "$(engine_store)" == "$store" ]]; then
      echo "DOCKER_HOST=unix://$ENGINE_SOCK"
      return 0
    fi
    engine_log "restarting with the $store image store (it runs with $(engine_store))"
    engine_down
  fi
  if [[ -e "$ENGINE_RUN/dockerd.pid" || -e "$ENGINE_RUN/containerd.pid" ]]; then
    engine_log "stale state in $ENGINE_RUN: cleaning up first"
    engine_down
  fi
  engine_root_ensure
  mkdir -p "$ENGINE_RUN"
  rm -f "$ENGINE_SOCK" "$ENGINE_RUN"/*.pid "$ENGINE_RUN"/*.log
  local snapshotter=false
  [[ $store == containerd ]] && snapshotter=true
  printf '{"features": {"containerd-snapshotter": %s}}\n' "$snapshotter" >"$ENGINE_RUN/daemon.json"
  echo "$store" >"$ENGINE_RUN/store"
  local t0=$SECONDS pid i
  engine_log "starting dockerd + containerd in $ENGINE_ROOT ($store image store)"
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

engine_down() {
  local pid cpid
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
    engine_pin_ns "$pid" dockerd || true
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
  engine_reap "$ENGINE_SOCK"
  rm -f "$ENGINE_RUN/store" "$ENGINE_RUN/daemon.json"
  engine_log "down in $((SECONDS - t0)) s"
  if engine_leftovers >/dev/null; then return 0; fi
  engine_log "leftovers after down:"; engine_leftovers >&2 || true
  return 1
}

# engine_leftovers: print whatever of the engine still exists (processes, cgroups, socket,
# host mounts under its paths); exit 1 if anything does.
engine_leftovers() {
  local found=0
  engine_leftovers_common dockerd containerd 'containerd-shim*' || found=1
  [[ -e "$ENGINE_SOCK" ]] && { echo "socket $ENGINE_SOCK"; found=1; }
  return $((found))
}
