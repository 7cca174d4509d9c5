# shellcheck shell=bash
# Fallback for hack/lib/sid-rootfs.sh (same interface): sid_rootfs DIR [extra packages...]
# debootstraps a Debian sid minbase into DIR (which must not exist or be empty), with the extra
# packages installed. Needs root and debootstrap. Mounts nothing that outlives the call.
sid_rootfs() {
	local dir=$1
	shift
	local mirror include
	[[ -n $dir ]] || {
		echo "sid_rootfs: usage: sid_rootfs DIR [packages...]" >&2
		return 2
	}
	command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap >&2
	# The mirror this machine's apt already uses (deb822 or one-line sources).
	mirror=$(grep -rhoE 'https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
		grep -v security | head -n1)
	mirror=${mirror:-http://deb.debian.org/debian}
	include=$(
		IFS=,
		echo "$*"
	)
	mkdir -p "$dir"
	# --include lets debootstrap resolve the extras itself, so apt inside the chroot (and the
	# archive's stale Release date) never comes into play here.
	debootstrap --variant=minbase ${include:+--include="$include"} sid "$dir" "$mirror" >&2 || {
		local rc=$?
		umount -R "$dir/proc" "$dir/sys" 2>/dev/null || true
		return "$rc"
	}
	# For later apt use inside the tree (the archive's Release file is stale here).
	mkdir -p "$dir/etc/apt/apt.conf.d"
	echo 'Acquire::Check-Valid-Until "false";' >"$dir/etc/apt/apt.conf.d/99no-check-valid-until"
	rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*_Packages
}
