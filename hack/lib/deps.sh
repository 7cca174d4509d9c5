#!/usr/bin/env bash
# shellcheck shell=bash
# hack/lib/deps.sh: install what the project needs on a fresh Debian machine (as root), from the
# table hack/lib/deps.list. README's commands source it and call it first:
#
#   source hack/lib/deps.sh; n2d_deps demo|test
#   hack/lib/deps.sh [--dry-run] demo|test       (the same, from the command line)
#
# For each command (or file) of the table listed for that README command and missing here:
#   a Debian package   apt-get install, all in one go; `apt-get update` first only when apt does
#                      not know a package (or an install fails on stale package lists);
#   go:PKG@VERSION     go install into ${NIXOS2DOCKER_CACHE:-~/.cache/nixos2docker}/gotools,
#                      which is put on PATH;
#   machine            stop, saying what to install (the Go toolchain, the Docker CLI).
# For `test` it also downloads the Go modules of every go.mod when the module cache lacks them.
# One line on stderr for each kind of thing installed, nothing when all is there. --dry-run (or
# N2D_DEPS_DRY_RUN=1) prints what it would install and installs nothing.
# N2D_DEPS_LIST overrides the table (tests of this script).

n2d_deps_log() { echo "deps: $*" >&2; }

# n2d_deps SCOPE: install what SCOPE (a README command: demo, test) needs; see above.
n2d_deps() {
  local scope=${1:?usage: n2d_deps demo|test}
  local root list dry=${N2D_DEPS_DRY_RUN:-0}
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  list=${N2D_DEPS_LIST:-$root/hack/lib/deps.list}
  [[ -r $list ]] || { n2d_deps_log "no table $list"; return 1; }
  [[ $dry == 0 || $dry == 1 ]] || { n2d_deps_log "N2D_DEPS_DRY_RUN must be 0 or 1"; return 1; }
  # The machine's Go lives in /usr/local/go; a login shell may not have it on PATH.
  if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
    export PATH=$PATH:/usr/local/go/bin
  fi
  local cache=${NIXOS2DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nixos2docker}

  local line cmd src scopes apt_pkgs=() apt_for=() go_tools=() machine=()
  while IFS= read -r line; do
    line=${line%%#*}
    read -r cmd src scopes <<<"$line" || true
    [[ -n $cmd ]] || continue
    [[ " $scopes " == *" $scope "* ]] || continue
    case $src in
      inside) ;;
      machine) command -v "$cmd" >/dev/null || machine+=("$cmd") ;;
      go:*)
        local dir=$cache/gotools/${src#go:} # one directory per package@version
        [[ :$PATH: == *":$dir:"* ]] || export PATH=$dir:$PATH
        [[ -x $dir/$cmd ]] || go_tools+=("$cmd=${src#go:}=$dir")
        ;;
      *)
        if [[ $cmd == /* ]]; then [[ -e $cmd ]] && continue; else command -v "$cmd" >/dev/null && continue; fi
        [[ " ${apt_pkgs[*]} " == *" $src "* ]] || apt_pkgs+=("$src")
        apt_for+=("$cmd")
        ;;
    esac
  done <"$list"

  if ((${#machine[@]})); then
    n2d_deps_log "missing ${machine[*]}: this machine should provide them (the Go toolchain in /usr/local/go, the Docker CLI); install them, then run again"
    return 1
  fi
  if ((${#apt_pkgs[@]})); then
    n2d_deps_log "$( ((dry)) && echo "would install" || echo installing) ${apt_pkgs[*]} (apt-get; for ${apt_for[*]})"
    if ((!dry)); then
      n2d_deps_apt "${apt_pkgs[@]}" || return 1
      # A package of another Debian release may not hold the command any more.
      local still=()
      for cmd in "${apt_for[@]}"; do
        if [[ $cmd == /* ]]; then [[ -e $cmd ]] || still+=("$cmd"); else command -v "$cmd" >/dev/null || still+=("$cmd"); fi
      done
      if ((${#still[@]})); then
        n2d_deps_log "installed ${apt_pkgs[*]}, but ${still[*]} still missing: on this Debian another package has them (fix hack/lib/deps.list)"
        return 1
      fi
    fi
  fi
  local t name pkg dir
  for t in "${go_tools[@]}"; do
    IFS='=' read -r name pkg dir <<<"$t"
    n2d_deps_log "$( ((dry)) && echo "would install" || echo installing) $name ($pkg, go install)"
    ((dry)) && continue
    local log
    log=$(mktemp)
    if ! GOBIN=$dir GOTOOLCHAIN=local go install "$pkg" >"$log" 2>&1; then
      cat "$log" >&2; rm -f "$log"
      n2d_deps_log "go install $pkg failed"
      return 1
    fi
    rm -f "$log"
  done
  if [[ $scope == test ]]; then
    n2d_deps_gomod "$root" "$dry" || return 1
  fi
}

# n2d_deps_apt PACKAGE...: apt-get install them, updating the package lists only when needed.
n2d_deps_apt() {
  local log p known=1
  log=$(mktemp)
  export DEBIAN_FRONTEND=noninteractive
  # Other jobs on the machine may hold dpkg's lock: wait for it rather than fail.
  local apt=(apt-get -q -y -o DPkg::Lock::Timeout=600)
  for p in "$@"; do apt-cache show --no-all-versions "$p" >/dev/null 2>&1 || known=0; done
  if ((known)) && "${apt[@]}" install --no-install-recommends "$@" >"$log" 2>&1; then
    rm -f "$log"
    return 0
  fi
  # Unknown to apt (no package lists yet) or stale lists (the archive moved on): update, once.
  if "${apt[@]}" update >>"$log" 2>&1 && "${apt[@]}" install --no-install-recommends "$@" >>"$log" 2>&1; then
    rm -f "$log"
    return 0
  fi
  tail -n 30 "$log" >&2
  rm -f "$log"
  n2d_deps_log "apt-get install $* failed (its log is above)"
  return 1
}

# n2d_deps_gomod ROOT DRY: download the modules of each go.mod in ROOT the module cache lacks.
n2d_deps_gomod() {
  local root=$1 dry=$2 mod dir log
  while IFS= read -r mod; do
    dir=$root/$(dirname "$mod")
    # GOPROXY=off: answers from the module cache alone, so it says what is missing.
    (cd "$dir" && GOPROXY=off GOFLAGS=-mod=mod go mod download) >/dev/null 2>&1 && continue
    n2d_deps_log "$( ((dry)) && echo "would download" || echo downloading) the Go modules of ${mod} (go mod download)"
    ((dry)) && continue
    log=$(mktemp)
    if ! (cd "$dir" && go mod download) >"$log" 2>&1; then
      cat "$log" >&2; rm -f "$log"
      n2d_deps_log "go mod download in $dir failed"
      return 1
    fi
    rm -f "$log"
  done < <(git -C "$root" ls-files -co --exclude-standard -- 'go.mod' '*/go.mod' 2>/dev/null)
}

# Run as a command: hack/lib/deps.sh [--dry-run] SCOPE.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  if [[ ${1:-} == --dry-run ]]; then
    export N2D_DEPS_DRY_RUN=1
    shift
  fi
  [[ $# -eq 1 && ($1 == demo || $1 == test) ]] || { echo "usage: hack/lib/deps.sh [--dry-run] demo|test" >&2; exit 2; }
  n2d_deps "$1"
fi
