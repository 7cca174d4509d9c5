module github.com/nixos2docker/nixos2docker/hack/repocheck

go 1.26.0

require mvdan.cc/sh/v3 v3.14.1
