// Package integration holds the end-to-end tests of nixos2docker on a real BuildKit: a
// buildkitd (OCI worker, runc) and a registry on loopback, the frontend image built from the
// project's Dockerfile and the Nix builder image, both pulled from that registry, and the toy
// example (examples/toy) built through a `# syntax=` file with buildctl and with
// `docker buildx build`, then checked layer by layer and run in a real Docker engine.
//
// The tests need the environment hack/env brings up; run them with hack/integration, which
// sets BUILDKIT_HOST, REGISTRY, FRONTEND_IMAGE and BUILDER_IMAGE. Without those variables they
// skip, except when CI is set: then a missing environment is a failure, never a silent skip.
package integration
