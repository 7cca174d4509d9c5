// Command nixos2docker-assemble writes the image archive for a NixOS image
// spec from the store paths of its closure: the Nix-native face of
// nixos2docker (the NixOS module's system.build.dockerImage runs it), with
// the same layers the BuildKit frontend makes.
//
//	nixos2docker-assemble --spec SPEC.json --out IMAGE.tar [--store-dir DIR]
//
// The output is written to a temporary file beside OUT and renamed when
// complete, so a failure never leaves a half-written image. SOURCE_DATE_EPOCH
// sets the image's creation time. Exit status: 0 success, 1 failure, 2 usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nixos2docker/nixos2docker/archive"
	"github.com/nixos2docker/nixos2docker/imagemodel"
	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/layers"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const name = "nixos2docker-assemble"

// usageError is a problem with the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	specPath := fs.String("spec", "", "the image spec (JSON) to assemble")
	out := fs.String("out", "", "where to write the image archive (docker load / OCI layout)")
	storeDir := fs.String("store-dir", imagespec.StoreDir, "where to read the closure's store paths from")
	quiet := fs.Bool("quiet", false, "no progress lines")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s --spec SPEC.json --out IMAGE.tar [--store-dir DIR]\n\n", name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	err := assemble(ctx, *specPath, *out, *storeDir, fs.Args(), *quiet, stdout, stderr)
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		fs.Usage()
		return 2
	default:
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
}

func assemble(ctx context.Context, specPath, out, storeDir string, rest []string, quiet bool, stdout, stderr io.Writer) error {
	switch {
	case len(rest) > 0:
		return usageError{fmt.Sprintf("unexpected argument %q", rest[0])}
	case specPath == "":
		return usageError{"--spec is required"}
	case out == "":
		return usageError{"--out is required"}
	}
	var mo imagemodel.Options
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		t, err := imagemodel.ParseEpoch(v)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH: %w", err)
		}
		mo.Epoch = &t
	}
	data, err := os.ReadFile(specPath)
	if err != nil {
		return fmt.Errorf("reading the spec: %w", err)
	}
	spec, err := imagespec.Parse(data)
	if err != nil {
		return fmt.Errorf("%s: %w", specPath, err)
	}
	model, err := imagemodel.New(spec, mo)
	if err != nil {
		return fmt.Errorf("%s: %w", specPath, err)
	}
	opts := archive.Options{StoreDir: storeDir}
	if !quiet {
		opts.Progress = func(e archive.Event) {
			if e.Phase == "hash" {
				fmt.Fprintf(stderr, "hashing %v\n", e)
			} else {
				fmt.Fprintln(stderr, e)
			}
		}
	}
	start := time.Now()
	size, err := writeAtomically(out, func(f *os.File) error {
		_, err := archive.WriteFile(ctx, f, model, opts)
		return err
	})
	if err != nil {
		return err
	}
	if !quiet {
		fmt.Fprintf(stderr, "wrote %s (%s) in %.1fs\n", out, layers.HumanSize(size), time.Since(start).Seconds())
	}
	return nil
}

// writeAtomically writes through a temporary file in out's directory and
// renames it to out only when write succeeded.
func writeAtomically(out string, write func(*os.File) error) (size int64, err error) {
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("creating the output: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := write(f); err != nil {
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("writing %s: %w", out, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return 0, fmt.Errorf("writing %s: %w", out, err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("writing %s: %w", out, err)
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return 0, fmt.Errorf("writing %s: %w", out, err)
	}
	return fi.Size(), nil
}
