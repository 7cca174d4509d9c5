# vendorHash of nixos/package.nix (buildGoModule), kept in its own file so it
# can be updated by a script. PLACEHOLDER until computed on a machine with
# nixpkgs: build .#nixos2docker once, and put the hash from the
# "hash mismatch … got: sha256-…" error here.
"sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
