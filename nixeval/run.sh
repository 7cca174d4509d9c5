#!/bin/sh
# The nixos2docker builder stage (written into the build by nixeval; POSIX sh,
# Nix >= 2.8 on PATH: Debian's nix-bin or the nixos/nix image; besides Nix
# only coreutils, grep and findutils). Runs as root.
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

# A store path as Nix's parser takes it (nix32 hash, then the name's
# characters), for grep -E.
store_path_re='/nix/store/[0123456789abcdfghijklmnpqrsvwxyz]{32}-[A-Za-z0-9+._?=-]+'

# read_registration REG [KEEP]: check a Nix registration (what `nix-store
# --dump-db` writes and --load-db reads: per store path its line, its
# narHash, narSize, deriver, the number of its references, then the
# references, a line each) line by line against the forms Nix reads there,
# and list its store paths in $tmp/reg.paths. With KEEP, the entries of the
# paths that are not in /nix/store go to $tmp/reg.keep (the very lines
# checked: all --load-db then reads) and their paths to $tmp/reg.missing.
# Fails, saying so, on anything else: a line that is not what Nix expects
# there, a name that is not a store path (the names go to cp), an entry cut
# short, a path twice.
read_registration() {
	: >"$tmp/reg.tagged"
	: >"$tmp/reg.paths"
	: >"$tmp/reg.keep"
	: >"$tmp/reg.missing"
	# Every line also goes to reg.tagged, tagged with what it must be (P
	# path, H hash, S size, D deriver, N count, R reference), for one grep.
	while IFS= read -r _p; do
		if ! { IFS= read -r _h && IFS= read -r _s && IFS= read -r _d && IFS= read -r _n; }; then
			say "$1: the entry of $_p is cut short"
			return 1
		fi
		case $_n in '' | *[!0-9]* | ???????*)
			say "$1: the entry of $_p has \"$_n\" references"
			return 1
			;;
		esac
		_e="$_p
$_h
$_s
$_d
$_n"
		_g="P $_p
H $_h
S $_s
D $_d
N $_n"
		while [ "$_n" -gt 0 ]; do
			if ! IFS= read -r _r; then
				say "$1: the references of $_p are cut short"
				return 1
			fi
			_e="$_e
$_r"
			_g="$_g
R $_r"
			_n=$((_n - 1))
		done
		printf '%s\n' "$_g" >>"$tmp/reg.tagged"
		printf '%s\n' "$_p" >>"$tmp/reg.paths"
		if [ -n "${2:-}" ] && [ ! -e "$_p" ] && [ ! -L "$_p" ]; then
			printf '%s\n' "$_e" >>"$tmp/reg.keep"
			printf '%s\n' "$_p" >>"$tmp/reg.missing"
		fi
	done <"$1"
	if grep -Evn "^(P $store_path_re|H (sha256:)?([0-9a-f]{64}|[0123456789abcdfghijklmnpqrsvwxyz]{52})|H sha256-[A-Za-z0-9+/]{43}=|S [0-9]{1,19}|D ($store_path_re)?|N [0-9]+|R $store_path_re)\$" "$tmp/reg.tagged" >"$tmp/reg.bad"; then
		head -n 5 "$tmp/reg.bad" >&2
		say "$1: the lines above are not in the form Nix reads there (line number, then the field: P store path, H narHash, S narSize, D deriver, N references, R reference)"
		return 1
	fi
	if LC_ALL=C sort "$tmp/reg.paths" | uniq -d | head -n 5 | grep . >&2; then
		say "$1: registers the paths above more than once"
		return 1
	fi
}

# The registration a store snapshot carries, as a nixos2docker image does.
registration=nix/var/nix/nixos2docker-registration

# restore_store: put into the store what a store snapshot mounted read-only
# at $NIXOS2DOCKER_STORE_FROM has and the store lacks, so that a fresh builder
# (a CI runner) builds or fetches only what changed since. The snapshot is a
# previous run's `run.sh save` (every valid path of that builder's store) or
# a previous nixos2docker image (its closure); both carry the Nix
# registration of their paths. The snapshot is trusted as a substituter
# would be (its content is what Nix will use for those paths), but only as
# a snapshot: the paths it registers must all be in it, only store paths
# that the store lacks are copied, into /nix/store and nowhere else, with
# root as their owner, and Nix registers exactly those (narHash, references:
# what Nix recorded when it made them), from the lines checked here. A path
# in the store, valid or not (another build's, being made), stays as it is.
# A snapshot that is not one, or that Nix refuses, is a warning: the build
# goes on from the store as it was.
restore_store() {
	src=${NIXOS2DOCKER_STORE_FROM:-}
	[ -n "$src" ] && [ -d "$src" ] || return 0
	_t=$(date +%s%N)
	# The snapshot's own directories and file: a symbolic link would be
	# followed in this step's file system (secrets, the store itself).
	for _f in nix nix/store nix/var nix/var/nix "$registration"; do
		if [ -L "$src/$_f" ]; then
			say "store snapshot at $src: /$_f is a symbolic link: not restored"
			return 0
		fi
	done
	if [ ! -f "$src/$registration" ]; then
		say "store snapshot at $src: no /$registration in it (NIXOS2DOCKER_STORE=save makes a snapshot; an image holds one when its configuration enables Nix), ignored"
		return 0
	fi
	if ! read_registration "$src/$registration" keep; then
		say "store snapshot at $src not restored"
		return 0
	fi
	_all=$(wc -l <"$tmp/reg.paths")
	while IFS= read -r _p; do
		if [ ! -e "$src$_p" ] && [ ! -L "$src$_p" ]; then
			say "the store snapshot at $src registers $_p but does not hold it: not restored"
			return 0
		fi
	done <"$tmp/reg.paths"
	while IFS= read -r _p; do
		printf '%s\0' "$src$_p"
	done <"$tmp/reg.missing" >"$tmp/reg.from"
	_n=$(wc -l <"$tmp/reg.missing")
	if [ "$_n" -eq 0 ]; then
		say "store snapshot: the store already has its $_all paths"
		return 0
	fi
	# What Nix never puts in a store: devices, sockets, fifos, set-id or
	# sticky bits, files others may write.
	# shellcheck disable=SC2016 # "$@" and "$0" are the inner sh's
	xargs -0 sh -c 'find "$@" \( ! -type f ! -type d ! -type l \) -o \( ! -type l -perm /7022 \)' sh <"$tmp/reg.from" >"$tmp/restore.odd"
	if [ -s "$tmp/restore.odd" ]; then
		head -n 5 "$tmp/restore.odd" >&2
		say "store snapshot at $src: the files above cannot be in a Nix store (not a file, directory or symbolic link; set-id, sticky or writable by others): not restored"
		return 0
	fi
	mkdir -p /nix/store
	# shellcheck disable=SC2016
	xargs -0 sh -c 'cp -a "$@" "$0"' /nix/store <"$tmp/reg.from"
	# Root's, as every store path is (a build user must not own one).
	tr '\n' '\0' <"$tmp/reg.missing" | xargs -0 chown -hR 0:0 --
	if ! nix-store --load-db <"$tmp/reg.keep"; then
		tr '\n' '\0' <"$tmp/reg.missing" | xargs -0 rm -rf --
		say "store snapshot at $src: Nix refused its registration (above): not restored"
		return 0
	fi
	_b=$(tr '\n' '\0' <"$tmp/reg.missing" | xargs -0 du -sbc | tail -n 1 | cut -f1)
	say "store snapshot restored: $_n of its $_all store paths copied into the store ($(mib "$_b") MiB) in $((($(date +%s%N) - _t) / 1000000)) ms"
}

# save_store: copy every valid store path, with the store's Nix registration
# of them, into $out/nix: a store snapshot (restore_store takes it back).
save_store() {
	# What the store holds, as its database records it: other builds may use
	# the store cache at the same time, and what they have not registered
	# yet stays out (valid paths never change).
	_t=$(date +%s%N)
	nix-store --dump-db >"$tmp/save.reg"
	read_registration "$tmp/save.reg"
	mkdir -p "$out/nix/store" "$(dirname "$out/$registration")"
	# shellcheck disable=SC2016 # "$@" and "$0" are the inner sh's
	tr '\n' '\0' <"$tmp/reg.paths" | xargs -0 sh -c 'cp -a "$@" "$0"' "$out/nix/store"
	cp "$tmp/save.reg" "$out/$registration"
	say "store saved: $(wc -l <"$tmp/reg.paths") store paths, $(mib "$(du -sb "$out/nix" | cut -f1)") MiB in $((($(date +%s%N) - _t) / 1000000)) ms"
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
