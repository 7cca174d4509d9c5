// Command nixos2docker-frontend is the BuildKit gateway frontend of nixos2docker.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/frontend/gateway/grpcclient"
	"github.com/moby/buildkit/util/appcontext"
)

func main() {
	if err := grpcclient.RunFromEnvironment(appcontext.Context(), build); err != nil {
		fmt.Fprintf(os.Stderr, "nixos2docker-frontend: %v\n", err)
		os.Exit(1)
	}
}

// build is a placeholder until the frontend package lands.
func build(ctx context.Context, c client.Client) (*client.Result, error) {
	return nil, errors.New("nixos2docker frontend: not implemented yet")
}
