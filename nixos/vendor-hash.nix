# vendorHash of nixos/package.nix (buildGoModule), in its own file so that
# hack/vendor-hash --update can rewrite it; hack/test checks it matches go.sum.
"sha256-BtoxSKijXwhwEozcgC0OGr1H9S2DSgw8hVqU4VmoYlM="
