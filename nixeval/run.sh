#!/bin/sh
# The nixos2docker builder stage (written into the build by nixeval; POSIX sh,
# Nix >= 2.8 on PATH: Debian's nix-bin or the nixos/nix image; besides Nix
# only coreutils and grep). Runs as root.
#
#   sh run.sh build     evaluate and build the image spec, copy it to
#                       $NIXOS2DOCKER_OUT/spec.json and list its closure in
#                       $NIXOS2DOCKER_OUT/closure (the paths stay in the
#                       store: each layer step copies its own from there)
#   sh run.sh targets   list the flake's nixosConfigurations (targets.json)
#
# Either way $NIXOS2DOCKER_OUT/status says what happened: "ok", or "error"
# with the evaluation's log in $NIXOS2DOCKER_OUT/log (plain files: nixeval
# reads them). An evaluation error is a result (exit 0) so the frontend can
# point at the offending line of the user's file; a fetch failure (the
# patterns in $dir/fetch-failures, nixeval's) or a failed build exits
# non-zero instead, so BuildKit shows it and caches nothing.
set -eu

dir=${NIXOS2DOCKER_DIR:-/nixos2docker}
out=${NIXOS2DOCKER_OUT:-/out}
mode=${1:-build}
export NIX_CONF_DIR="$dir"

run=${NIXOS2DOCKER_RUN:-/run/nixos2docker}

# Derivations build as unprivileged users (build-users-group = nixbld in
# $dir/nix.conf), as in Nix's multi-user mode: the secrets are root's (mode
# 0400) and so is the store, so what a derivation runs can read neither and
# change nothing it did not build. Created here unless the image has them
# (the nixos/nix image does; Debian's nix-bin does not).
build_users() {
	grep -q '^nixbld:' /etc/group && return 0
	_n=1
	_members=
	while [ "$_n" -le "$1" ]; do
		echo "nixbld$_n:x:$((30000 + _n)):30000:Nix build user $_n:/var/empty:/bin/false" >>/etc/passwd
		_members=$_members${_members:+,}nixbld$_n
		_n=$((_n + 1))
	done
	echo "nixbld:x:30000:$_members" >>/etc/group
}
if [ "${NIXOS2DOCKER_BUILD_USERS:-0}" -gt 0 ]; then
	build_users "$NIXOS2DOCKER_BUILD_USERS"
fi

# Optional BuildKit secrets (see nixeval.Secrets), root-only files on tmpfs
# mounts: they never reach a layer, a cache key or the environment (which a
# fixed-output derivation could ask for through impureEnvVars). netrc and the
# nixconf include are named in $dir/nix.conf; the GitHub token becomes an
# extra-access-tokens line in the root-only $run, which nix.conf includes,
# so only Nix's fetchers see it.
umask 077
mkdir -p "$run"
chmod 0700 "$run"
if [ -r /run/secrets/github_token ]; then
	printf 'extra-access-tokens = github.com=%s\n' "$(tr -d ' \t\r\n' </run/secrets/github_token)" >"$run/access-tokens.conf"
fi
umask 022

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

say() { echo "nixos2docker: $*" >&2; }

# logged LOG CMD...: run CMD, its stderr shown live and copied to LOG, its
# stdout to ours; return CMD's status.
logged() {
	_log=$1
	shift
	{ { if "$@"; then echo 0 >"$tmp/status"; else echo $? >"$tmp/status"; fi; } 2>&1 1>&3 3>&- | tee "$_log" >&2; } 3>&1
	return "$(cat "$tmp/status")"
}

# eval_failed LOG: report an evaluation error as a result, unless it is a
# fetch failure (then fail the step: retrying, or adding a secret, may work;
# caching would not).
eval_failed() {
	if grep -Eiq -f "$dir/fetch-failures" "$1"; then
		cat "$dir/fetch-failure-hint" >&2
		exit 1
	fi
	cp "$1" "$out/log"
	echo error >"$out/status"
	say "evaluation failed; the error is in $out/log"
	exit 0
}

say "$(nix --version)"
case $mode in
targets)
	say "listing the NixOS configurations of the flake"
	logged "$tmp/eval.log" nix-instantiate -I "nixos2docker=$dir" --eval --strict --json "$dir/eval.nix" -A targets >"$tmp/targets.json" ||
		eval_failed "$tmp/eval.log"
	cp "$tmp/targets.json" "$out/targets.json"
	echo ok >"$out/status"
	;;
build)
	say "evaluating the image spec"
	logged "$tmp/eval.log" nix-instantiate -I "nixos2docker=$dir" --add-root "$tmp/drv" "$dir/eval.nix" -A spec >/dev/null ||
		eval_failed "$tmp/eval.log"
	drv=$(readlink "$tmp/drv")
	say "building $drv"
	# A root while we copy (and no warning that there is none).
	nix-store --realise --add-root "$tmp/spec" "$drv" >/dev/null
	spec=$(readlink "$tmp/spec")
	cp "$spec" "$out/spec.json"
	chmod 0644 "$out/spec.json"
	# The spec's closure stays in the store (the cache mount): each layer
	# step copies its own paths from there, so a rebuild copies only what
	# changed. The list of it is Nix's own (the spec references every path
	# it lists; its builder's paths come along), never one read from the
	# document a derivation wrote: the frontend refuses a spec that lists a
	# path outside it. Each entry is checked against the store-path grammar.
	nix-store --query --requisites "$spec" >"$tmp/requisites"
	grep -Fxv "$spec" "$tmp/requisites" >"$tmp/closure" || :
	if grep -Ev '^/nix/store/[0123456789abcdfghijklmnpqrsvwxyz]{32}-[A-Za-z0-9+._?=-]+$' "$tmp/closure" >&2; then
		say "the lines above are not store paths: refusing them"
		exit 1
	fi
	cp "$tmp/closure" "$out/closure"
	echo ok >"$out/status"
	say "done: $spec"
	;;
*)
	echo "usage: run.sh build|targets" >&2
	exit 2
	;;
esac
