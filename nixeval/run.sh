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
#   sh run.sh save      copy every valid store path, with their Nix registration,
#                       into $NIXOS2DOCKER_OUT/nix: a store snapshot
#
# build and targets first restore a store snapshot mounted at
# $NIXOS2DOCKER_STORE_FROM, if any (see restore_store). Either way
# $NIXOS2DOCKER_OUT/status says what happened: "ok", or "error"
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

# store_paths: the names in /nix/store, sorted (no .links; store names are
# plain characters, so ls is safe).
# shellcheck disable=SC2012
store_paths() { ls /nix/store 2>/dev/null | LC_ALL=C sort; }

# mib BYTES: BYTES in MiB, one decimal (integer arithmetic: no awk in nixos/nix).
mib() { echo "$(($1 / 1048576)).$(($1 % 1048576 * 10 / 1048576))"; }

# registration_paths REG: the store paths of a Nix registration (what
# `nix-store --dump-db` writes and --load-db reads: per path its name, hash,
# size, deriver, the number of references and the references), one a line;
# fails, saying so, if one is not a store path (the names go to cp).
registration_paths() {
	while IFS= read -r _p; do
		if ! { read -r _ && read -r _ && read -r _ && read -r _n; }; then
			break
		fi
		while [ "$_n" -gt 0 ]; do
			read -r _
			_n=$((_n - 1))
		done
		printf '%s\n' "$_p"
	done <"$1" >"$tmp/registration.paths"
	if grep -Ev '^/nix/store/[0123456789abcdfghijklmnpqrsvwxyz]{32}-[A-Za-z0-9+._?=-]+$' "$tmp/registration.paths" >&2; then
		say "the lines above of $1 are not store paths"
		return 1
	fi
	cat "$tmp/registration.paths"
}

# The registration a store snapshot carries, as a nixos2docker image does.
registration=nix/var/nix/nixos2docker-registration

# restore_store: put into the store what a store snapshot mounted read-only
# at $NIXOS2DOCKER_STORE_FROM has and the store lacks, so that a fresh builder
# (a CI runner) builds or fetches only what changed since. The snapshot is a
# previous run's `run.sh save` (every valid path of that builder's store) or
# a previous nixos2docker image (its closure); both carry the Nix
# registration of their paths. The missing paths are copied and registered
# from it (narHash, references: what Nix recorded when it made them); the
# paths the store has stay as they are.
restore_store() {
	src=${NIXOS2DOCKER_STORE_FROM:-}
	[ -n "$src" ] && [ -d "$src" ] || return 0
	_t=$(date +%s%N)
	if [ ! -f "$src/$registration" ]; then
		say "store snapshot at $src: no /$registration in it (NIXOS2DOCKER_STORE=save makes a snapshot; an image holds one when its configuration enables Nix), ignored"
		return 0
	fi
	registration_paths "$src/$registration" >"$tmp/snapshot.paths" || {
		say "store snapshot not restored"
		return 0
	}
	: >"$tmp/snapshot.missing"
	while IFS= read -r _p; do
		if [ ! -e "$src$_p" ]; then
			say "the store snapshot at $src registers $_p but does not hold it: not restored"
			return 0
		fi
		[ -e "$_p" ] || printf '%s\n' "$src$_p" >>"$tmp/snapshot.missing"
	done <"$tmp/snapshot.paths"
	_n=$(wc -l <"$tmp/snapshot.missing")
	if [ "$_n" -eq 0 ]; then
		say "store snapshot: the store already has its $(wc -l <"$tmp/snapshot.paths") paths"
		return 0
	fi
	mkdir -p /nix/store
	# shellcheck disable=SC2016 # "$@" and "$0" are the inner sh's
	tr '\n' '\0' <"$tmp/snapshot.missing" | xargs -0 sh -c 'cp -a "$@" "$0"' /nix/store
	nix-store --load-db <"$src/$registration"
	_b=$(tr '\n' '\0' <"$tmp/snapshot.missing" | xargs -0 du -sbc | tail -n 1 | cut -f1)
	say "store snapshot restored: $_n of its $(wc -l <"$tmp/snapshot.paths") store paths copied into the store ($(mib "$_b") MiB) in $((($(date +%s%N) - _t) / 1000000)) ms"
}

# save_store: copy every valid store path, with the store's Nix registration
# of them, into $out/nix: a store snapshot (restore_store takes it back).
save_store() {
	# What the store holds, as its database records it: other builds may use
	# the store cache at the same time, and what they have not registered
	# yet stays out (valid paths never change).
	_t=$(date +%s%N)
	nix-store --dump-db >"$tmp/save.reg"
	registration_paths "$tmp/save.reg" >"$tmp/save.paths"
	mkdir -p "$out/nix/store" "$(dirname "$out/$registration")"
	# shellcheck disable=SC2016 # "$@" and "$0" are the inner sh's
	tr '\n' '\0' <"$tmp/save.paths" | xargs -0 sh -c 'cp -a "$@" "$0"' "$out/nix/store"
	cp "$tmp/save.reg" "$out/$registration"
	say "store saved: $(wc -l <"$tmp/save.paths") store paths, $(mib "$(du -sb "$out/nix" | cut -f1)") MiB in $((($(date +%s%N) - _t) / 1000000)) ms"
}

# store_report BEFORE: what this step added to the store since the listing
# BEFORE (what Nix built, fetched or copied in: sources), in paths and bytes.
store_report() {
	store_paths >"$tmp/store.after"
	LC_ALL=C comm -13 "$1" "$tmp/store.after" >"$tmp/store.new"
	_n=$(wc -l <"$tmp/store.new")
	_drv=$(grep -c '\.drv$' "$tmp/store.new" || true)
	_b=0
	if [ "$_n" -gt 0 ]; then
		_b=$(cd /nix/store && xargs du -sbc <"$tmp/store.new" | tail -n 1 | cut -f1)
	fi
	say "store: $((_n - _drv)) new paths (built, fetched or copied in), $_drv new derivations, $(mib "$_b") MiB added"
}

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
build | targets)
	restore_store
	store_paths >"$tmp/store.before"
	;;
esac
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
	store_report "$tmp/store.before"
	say "done: $spec"
	;;
save)
	save_store
	;;
*)
	echo "usage: run.sh build|targets|save" >&2
	exit 2
	;;
esac
