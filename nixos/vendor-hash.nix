# vendorHash of nixos/package.nix (buildGoModule), in its own file so that
# hack/vendor-hash --update can rewrite it; hack/test checks it matches go.sum.
"sha256-x6tbn+XnI9UnCFAyJ+VVyRa3FyM19D/wuJvW0FIuw3c="
