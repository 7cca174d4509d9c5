// Command nixos2docker-frontend is the BuildKit gateway frontend of
// nixos2docker. Without arguments it serves BuildKit (as the image named by a
// file's "# syntax=" line); `nixos2docker-frontend llb -f FILE …` prints the
// LLB a file turns into, without a daemon.
package main

import (
	"fmt"
	"os"

	"github.com/moby/buildkit/frontend/gateway/grpcclient"
	"github.com/moby/buildkit/util/appcontext"
	"github.com/nixos2docker/nixos2docker/frontend"
)

func main() {
	ctx := appcontext.Context()
	if len(os.Args) > 1 && os.Args[1] == "llb" {
		if err := frontend.DebugLLB(ctx, os.Args[2:], os.Stdout, os.Stderr); err != nil {
			// Located errors read FILE:LINE:COL: msg, like a compiler's.
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: nixos2docker-frontend (as a BuildKit frontend)\n       nixos2docker-frontend llb -f FILE [--opt key=value]... [--build-platform P] [--spec SPEC.json [--no-mergeop]]")
		os.Exit(2)
	}
	if err := grpcclient.RunFromEnvironment(ctx, frontend.Build); err != nil {
		fmt.Fprintf(os.Stderr, "nixos2docker-frontend: %v\n", err)
		os.Exit(1)
	}
}
