# Builds the nixos2docker BuildKit frontend image: one static binary on scratch.
# GO_IMAGE is a build arg so the image also builds where no public registry is
# reachable (the test harness passes a Go image it made and pushed itself).
#
# Multi-platform (`--platform linux/amd64,linux/arm64`, as the release workflow
# builds it): Go runs on the build platform and cross-compiles for each target
# (GOOS/GOARCH from TARGETOS/TARGETARCH), so no step runs under emulation.
ARG GO_IMAGE=golang:1.26
FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
# Only when the build passes one (hack/images/build passes the machine's when it
# is not Go's default): a build arg is in the RUN steps' environment; unset, Go
# uses its own default proxy.
ARG GOPROXY
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
WORKDIR /src
# The frontend module (BuildKit) requires the root module through a replace directive.
COPY go.mod go.sum ./
COPY frontend/go.mod frontend/go.sum ./frontend/
RUN --mount=type=cache,id=nixos2docker-gomod,target=/root/go/pkg/mod \
    go -C frontend mod download
COPY . .
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,id=nixos2docker-gomod,target=/root/go/pkg/mod \
    --mount=type=cache,id=nixos2docker-gobuild,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go -C frontend build -ldflags "-s -w" -o /out/nixos2docker-frontend ./cmd/nixos2docker-frontend

FROM scratch
# What BuildKit checks before it runs the frontend: it answers subrequests
# (--call targets, --call outline, --check), takes its context and file as
# frontend inputs and named contexts (--build-context nixos2docker-store=…);
# it needs no network of its own.
LABEL moby.buildkit.frontend.caps="moby.buildkit.frontend.inputs,moby.buildkit.frontend.subrequests,moby.buildkit.frontend.contexts" \
      moby.buildkit.frontend.network.none="true"
COPY --from=build /out/nixos2docker-frontend /bin/nixos2docker-frontend
ENTRYPOINT ["/bin/nixos2docker-frontend"]
