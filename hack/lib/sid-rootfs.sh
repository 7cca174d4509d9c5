# shellcheck shell=bash
# sid-rootfs.sh: a cached Debian sid minbase root filesystem, for scripts that need one.
#
#   source hack/lib/sid-rootfs.sh
#   sid_rootfs DIR [extra packages...]
#
# DIR must not exist or be empty. It becomes a Debian sid (debootstrap --variant=minbase) tree
# with the extra packages installed, apt set up to accept sid's stale Release file
# (Acquire::Check-Valid-Until "false") and a policy-rc.d that exits 101 (package scripts start no
# daemon). The mirror is the Debian archive this machine's apt sources already use (override with
# SID_MIRROR). The result is cached as a tarball under ${NIXOS2DOCKER_CACHE:-~/.cache/nixos2docker}/rootfs,
# keyed by the sorted package list; the cache is optional (SID_ROOTFS_NO_CACHE=1 skips it).
# Progress goes to stderr. Must run as root. Mounts happen only inside a private mount namespace,
# so nothing stays mounted whatever happens.

sid_rootfs_mirror() {
  if [[ -n "${SID_MIRROR:-}" ]]; then echo "$SID_MIRROR"; return; fi
  local m
  # deb822 (*.sources) "URIs:" lines and one-line "deb URI suite" entries; first Debian archive
  # that is not the security archive.
  m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' |
    tr ' ' '\n' | grep -E '/debian/?$' | grep -v security | head -n1) || true
  echo "${m:-http://deb.debian.org/debian}"
}

# sid_chroot DIR CMD...: run CMD in DIR with /proc and /dev, in a private mount namespace.
sid_chroot() {
  local dir=$1; shift
  # shellcheck disable=SC2016 # expanded by the inner shell
  unshare -m --propagation private -- /bin/sh -c '
    d=$1; shift
    mount -t proc proc "$d/proc" && mount --rbind /dev "$d/dev" && exec chroot "$d" "$@"' \
    sh "$dir" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"
}

sid_rootfs() {
  if [[ $# -lt 1 || -z "$1" ]]; then echo "sid_rootfs: usage: sid_rootfs DIR [packages...]" >&2; return 2; fi
  if [[ $(id -u) -ne 0 ]]; then echo "sid_rootfs: must run as root" >&2; return 1; fi
  local dir=$1; shift
  if [[ -e "$dir" && -n "$(ls -A "$dir" 2>/dev/null)" ]]; then
    echo "sid_rootfs: $dir exists and is not empty" >&2; return 1
  fi
  local pkgs key cache tarball mirror t0
  pkgs=""
  [[ $# -gt 0 ]] && pkgs=$(printf '%s\n' "$@" | sort -u | tr '\n' ' ')
  key=$(printf 'sid-minbase v1\n%s\n' "$pkgs" | sha256sum | cut -c1-16)
  cache=${NIXOS2DOCKER_CACHE:-$HOME/.cache/nixos2docker}/rootfs
  tarball=$cache/sid-$key.tar
  mkdir -p "$dir"
  if [[ -z "${SID_ROOTFS_NO_CACHE:-}" && -f "$tarball" ]]; then
    echo "sid_rootfs: from cache $tarball" >&2
    tar -C "$dir" -xpf "$tarball"
    return 0
  fi
  mirror=$(sid_rootfs_mirror)
  t0=$SECONDS
  echo "sid_rootfs: debootstrap sid minbase from $mirror into $dir (packages: ${pkgs:-none})" >&2
  if ! debootstrap --variant=minbase sid "$dir" "$mirror" >"$dir.debootstrap.log" 2>&1; then
    tail -n 30 "$dir.debootstrap.log" >&2
    [[ -f "$dir/debootstrap/debootstrap.log" ]] && tail -n 30 "$dir/debootstrap/debootstrap.log" >&2
    rm -f "$dir.debootstrap.log"
    echo "sid_rootfs: debootstrap failed" >&2; return 1
  fi
  rm -f "$dir.debootstrap.log"
  echo 'Acquire::Check-Valid-Until "false";' >"$dir/etc/apt/apt.conf.d/99no-check-valid-until"
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
  chmod 0755 "$dir/usr/sbin/policy-rc.d"
  cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
  if [[ $# -gt 0 ]]; then
    echo "sid_rootfs: apt-get install $pkgs" >&2
    # shellcheck disable=SC2086
    if ! sid_chroot "$dir" sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" && apt-get clean' sh $pkgs >"$dir.apt.log" 2>&1; then
      tail -n 30 "$dir.apt.log" >&2; rm -f "$dir.apt.log"
      echo "sid_rootfs: apt-get install failed" >&2; return 1
    fi
    rm -f "$dir.apt.log"
  fi
  rm -rf "$dir"/var/lib/apt/lists/*_Packages "$dir"/var/cache/apt/*.bin
  echo "sid_rootfs: built in $((SECONDS - t0)) s" >&2
  if [[ -z "${SID_ROOTFS_NO_CACHE:-}" ]]; then
    mkdir -p "$cache"
    tar -C "$dir" --numeric-owner -cpf "$tarball.tmp.$$" . && mv "$tarball.tmp.$$" "$tarball"
    echo "sid_rootfs: cached as $tarball" >&2
  fi
}
