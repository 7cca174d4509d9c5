# nixpkgs' lib for the tests when neither NIXPKGS_LIB nor ../shared/nixpkgs-lib provides it:
# internal/testenv.NixpkgsLib evaluates this with Nix, which fetches it once; it then stays in the
# Nix store, and later runs need no network (fetchTarball with a hash reuses the store path).
#
# nix-community/nixpkgs.lib is nixpkgs' lib/ (and COPYING) split out of NixOS/nixpkgs by that
# repository's update workflow (git filter-repo --path lib --path COPYING, merged weekly): a
# 0.3 MiB download instead of all of nixpkgs. The pinned commit, de42d44 of 2026-06-14 (merging
# nixpkgs master up to "lib.attrsets.mergeAttrsList: small arithmetic performance improvements
# (#528677)", lib.version 26.11pre), is the one ../shared/nixpkgs-lib was taken from: its lib/ is
# that copy file for file (checked with diff -r).
#
# sha256 is the NAR hash of the unpacked archive, what fetchTarball checks. Obtained without
# downloading the archive: `git archive` of that commit from a clone of nix-community/nixpkgs.lib,
# unpacked, then `nix-hash --type sha256 --base32 DIR`; and checked by fetchTarball itself on that
# `git archive` tarball through a file:// URL. GitHub's archive of a commit is `git archive` of it
# (the repository has no export-ignore attributes).
#
# The arguments are for internal/testenv's test of the fetch (a local tarball).
{
  url ? "https://github.com/nix-community/nixpkgs.lib/archive/de42d44212d207476489bce163375d8306a26d59.tar.gz",
  sha256 ? "1v7rldwwmxw2wq7b8zrsmz3mk1kav7q8v3m9b5g14ff4j04r69nj",
}:
builtins.fetchTarball { inherit url sha256; }
