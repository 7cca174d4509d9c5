# shellcheck shell=bash
# Sourceable helpers for the local BuildKit + registry harness (hack/tools, hack/env,
# hack/integration, hack/bench). Source it; it defines variables and functions only.
#
# Interface for other scripts:
#   n2d_tools_bin            prints the bin dir of the pinned tools (builds them if missing)
#   n2d_env_vars             prints BUILDKIT_HOST=… REGISTRY=… FRONTEND_IMAGE=… BUILDER_IMAGE=…
#                            for a running env (what `hack/env env` prints)
#   N2D_STATE                state dir of the env (default /tmp/nixos2docker-env)

N2D_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export N2D_ROOT

# Pinned versions, measured in ENVIRONMENT.md.
N2D_BUILDKIT_VERSION=v0.34.2
N2D_REGISTRY_VERSION=v3.1.2
N2D_BUILDX_VERSION=v0.38.2

N2D_CACHE=${NIXOS2DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nixos2docker}
N2D_TOOLS_KEY="buildkit-${N2D_BUILDKIT_VERSION}_registry-${N2D_REGISTRY_VERSION}_buildx-${N2D_BUILDX_VERSION}"
N2D_BIN=${N2D_BIN:-$N2D_CACHE/bin/$N2D_TOOLS_KEY}

N2D_STATE=${N2D_STATE:-/tmp/nixos2docker-env}
N2D_REGISTRY_ADDR=${N2D_REGISTRY_ADDR:-localhost:5000}
N2D_REGISTRY_LISTEN=${N2D_REGISTRY_LISTEN:-127.0.0.1:5000}
N2D_BUILDX_BUILDER=${N2D_BUILDX_BUILDER:-nixos2docker}

N2D_BUILDER_IMAGE=${N2D_BUILDER_IMAGE:-$N2D_REGISTRY_ADDR/nixos2docker/builder:latest}
N2D_GO_IMAGE=${N2D_GO_IMAGE:-$N2D_REGISTRY_ADDR/nixos2docker/golang:1.26}
N2D_FRONTEND_IMAGE=${N2D_FRONTEND_IMAGE:-$N2D_REGISTRY_ADDR/nixos2docker/frontend:dev}

export PATH=/usr/local/go/bin:$PATH

n2d_log() { printf '%s [%s] %s\n' "$(date -u +%H:%M:%S)" "${N2D_LOG_TAG:-n2d}" "$*" >&2; }
n2d_die() {
	n2d_log "error: $*"
	exit 1
}

# n2d_now prints a monotonic-enough timestamp in milliseconds.
n2d_now() { date +%s%3N; }
# n2d_secs START prints seconds elapsed since START (from n2d_now), one decimal.
n2d_secs() { awk -v s="$1" -v e="$(n2d_now)" 'BEGIN { printf "%.1f", (e - s) / 1000 }'; }

n2d_tools_bin() {
	if [[ -x $N2D_BIN/buildkitd && -x $N2D_BIN/buildctl && -x $N2D_BIN/registry && -x $N2D_BIN/docker-buildx ]]; then
		printf '%s\n' "$N2D_BIN"
		return 0
	fi
	"$N2D_ROOT/hack/tools"
}

# n2d_goproxy prints this machine's GOPROXY when it is not Go's default, else nothing: image builds
# pass it on as a build arg only then, and otherwise leave the Go inside them to its own default.
n2d_goproxy() {
	[[ -z $(go env -changed GOPROXY) ]] || go env GOPROXY
}

n2d_buildkit_sock() { printf '%s\n' "$N2D_STATE/buildkitd/buildkitd.sock"; }

n2d_env_vars() {
	cat <<EOF
BUILDKIT_HOST=unix://$(n2d_buildkit_sock)
BUILDKIT_ROOT=$N2D_STATE/buildkitd/root
REGISTRY=$N2D_REGISTRY_ADDR
FRONTEND_IMAGE=$N2D_FRONTEND_IMAGE
BUILDER_IMAGE=$N2D_BUILDER_IMAGE
GO_IMAGE=$N2D_GO_IMAGE
BUILDX_BUILDER=$N2D_BUILDX_BUILDER
N2D_BIN=$N2D_BIN
EOF
}

# n2d_pid_alive PIDFILE: true when the pid file names a live process.
n2d_pid_alive() {
	local pid
	[[ -s $1 ]] || return 1
	pid=$(<"$1")
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# n2d_stop_pidfile PIDFILE NAME: SIGTERM the process in the pid file, wait up to 15 s, then
# SIGKILL; remove the pid file. Only ever the PID this harness recorded.
n2d_stop_pidfile() {
	local pidfile=$1 name=$2 pid i
	if ! n2d_pid_alive "$pidfile"; then
		rm -f "$pidfile"
		return 0
	fi
	pid=$(<"$pidfile")
	n2d_log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 150; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		n2d_log "$name did not stop in 15 s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		sleep 0.2
	fi
	rm -f "$pidfile"
}

# n2d_buildctl ARGS...: buildctl against the env's buildkitd.
n2d_buildctl() { "$N2D_BIN/buildctl" --addr "unix://$(n2d_buildkit_sock)" "$@"; }
