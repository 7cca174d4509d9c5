// Package systemd is the end-to-end test of the systemd patches (patches/systemd): it boots a
// Debian sid root filesystem with stock systemd and one with patched systemd as PID 1 in a real
// Docker engine (hack/docker-engine) that sees a cgroup-v2 host, with nothing but
// `docker run -d --tmpfs /run --tmpfs /run/lock --tmpfs /tmp IMAGE`, and checks boot, logs,
// services, stop and cleanup. hack/systemd-e2e builds the root filesystems and runs it.
package systemd

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/nixos2docker/nixos2docker/e2e/harness"
)

// Markers the test units print, found in `docker logs`.
const (
	helloLine     = "NIXOS2DOCKER-E2E-HELLO"
	hardenedLine  = "NIXOS2DOCKER-E2E-HARDENED"
	dynamicLine   = "NIXOS2DOCKER-E2E-DYNAMIC"
	helloUnit     = "n2d-hello.service"
	hardenedUnit  = "n2d-hardened.service"
	dynamicUnit   = "n2d-dynamic.service"
	imageStopSig  = "SIGRTMIN+3"
	imageRepoBase = "nixos2docker-e2e/"
)

// dynamicStateDir is the DynamicUser= unit's StateDirectory= (under /var/lib).
const dynamicStateDir = "n2d-dynamic"

// testUnits are added to each root filesystem and enabled in multi-user.target. Type=exec makes
// a unit active only once its command really runs, so a sandbox that cannot be set up shows as
// failed rather than briefly active.
var testUnits = map[string]string{
	helloUnit: `[Unit]
Description=nixos2docker e2e: prints a known line

[Service]
Type=exec
ExecStart=/bin/sh -c 'echo ` + helloLine + ` from the test service; exec sleep infinity'

[Install]
WantedBy=multi-user.target
`,
	hardenedUnit: `[Unit]
Description=nixos2docker e2e: typical NixOS hardening

[Service]
Type=exec
ProtectSystem=strict
PrivateTmp=yes
NoNewPrivileges=yes
ExecStart=/bin/sh -c 'echo ok >/tmp/probe && echo ` + hardenedLine + ` private tmp $(cat /tmp/probe); exec sleep infinity'

[Install]
WantedBy=multi-user.target
`,
	// The service writes a probe into its StateDirectory= itself (and fails if it cannot), then
	// prints its UID and the probe's content.
	dynamicUnit: `[Unit]
Description=nixos2docker e2e: DynamicUser

[Service]
Type=exec
DynamicUser=yes
StateDirectory=` + dynamicStateDir + `
ExecStart=/bin/sh -c 'echo ok >"$STATE_DIRECTORY/probe" || exit 1; echo ` + dynamicLine + ` uid $(id -u) state "$STATE_DIRECTORY" $(cat "$STATE_DIRECTORY/probe"); exec sleep infinity'

[Install]
WantedBy=multi-user.target
`,
}

// managerDropIn is the system manager configuration of the images nixos2docker makes
// (nixos/docker-container.nix, systemd.settings.Manager), so the test boots what users boot:
// PID 1 logs to the console and units write to it, which patches/systemd/262 (0003) maps to
// the container's stdout/stderr when there is no /dev/console.
const (
	managerDropInPath = "etc/systemd/system.conf.d/50-nixos2docker.conf"
	managerDropIn     = `[Manager]
LogTarget=console
ShowStatus=yes
DefaultStandardOutput=tty
DefaultStandardError=inherit
`
)

// imageKey identifies an image made from tarPath with the current test units, so an unchanged
// root filesystem is not imported again on the next run (the engine keeps its images).
func imageKey(tarPath string) (string, error) {
	fi, err := os.Stat(tarPath)
	if err != nil {
		return "", fmt.Errorf("root filesystem tar: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "v1\n%s\n%d\n%d\n", tarPath, fi.Size(), fi.ModTime().UnixNano())
	names := make([]string, 0, len(testUnits))
	for n := range testUnits {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "%s\n%s\n", n, testUnits[n])
	}
	fmt.Fprintf(h, "%s\n%s\n", managerDropInPath, managerDropIn)
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// buildImage imports tarPath plus the test units as IMAGE with CMD /sbin/init and STOPSIGNAL
// SIGRTMIN+3 (as `docker import --change` does for a NixOS image's config), reusing an image
// already imported from the same tar.
func buildImage(ctx context.Context, e *harness.Engine, tarPath, name string) (ref string, took time.Duration, err error) {
	key, err := imageKey(tarPath)
	if err != nil {
		return "", 0, err
	}
	ref = imageRepoBase + name + ":" + key
	if _, err := e.Docker(ctx, "image", "inspect", ref); err == nil {
		return ref, 0, nil
	}
	t0 := time.Now()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeImageTar(pw, tarPath)) }()
	_, err = e.DockerStdin(ctx, pr, "import",
		"--change", `CMD ["/sbin/init"]`, "--change", "STOPSIGNAL "+imageStopSig, "-", ref)
	_ = pr.CloseWithError(io.ErrClosedPipe)
	if err != nil {
		return "", 0, fmt.Errorf("importing %s: %w", tarPath, err)
	}
	took = time.Since(t0)
	// Images of earlier root filesystems would pile up in the engine's cached data-root.
	if out, err := e.Docker(ctx, "images", "--format", "{{.Repository}}:{{.Tag}}", imageRepoBase+name); err == nil {
		for _, old := range strings.Fields(out) {
			// podman names unqualified images localhost/NAME.
			if strings.TrimPrefix(old, "localhost/") != ref {
				_, _ = e.Docker(ctx, "rmi", old)
			}
		}
	}
	return ref, took, nil
}

// writeImageTar writes the root filesystem tar with the test units and the manager drop-in
// appended, leaving out the rootfs's own entries at those paths.
func writeImageTar(w io.Writer, tarPath string) error {
	f, err := os.Open(tarPath)
	if err != nil {
		return fmt.Errorf("opening root filesystem: %w", err)
	}
	defer f.Close()
	ours := map[string]bool{}
	const sysdir = "etc/systemd/system"
	const wants = sysdir + "/multi-user.target.wants"
	for n := range testUnits {
		ours[path.Join(sysdir, n)] = true
		ours[path.Join(wants, n)] = true
	}
	ours[managerDropInPath] = true
	tr := tar.NewReader(f)
	tw := tar.NewWriter(w)
	seen := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", tarPath, err)
		}
		name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		if ours[name] {
			continue
		}
		seen[name] = true
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("writing image tar: %w", err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fmt.Errorf("copying %s: %w", hdr.Name, err)
		}
	}
	mtime := time.Unix(0, 0)
	for _, d := range []string{"etc", "etc/systemd", sysdir, wants, path.Dir(managerDropInPath)} {
		if !seen[d] {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "./" + d + "/", Mode: 0o755, ModTime: mtime}); err != nil {
				return fmt.Errorf("writing image tar: %w", err)
			}
		}
	}
	names := make([]string, 0, len(testUnits))
	for n := range testUnits {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		body := testUnits[n]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./" + path.Join(sysdir, n), Mode: 0o644, Size: int64(len(body)), ModTime: mtime}); err != nil {
			return fmt.Errorf("writing image tar: %w", err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			return fmt.Errorf("writing image tar: %w", err)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "./" + path.Join(wants, n), Linkname: "/" + path.Join(sysdir, n), ModTime: mtime}); err != nil {
			return fmt.Errorf("writing image tar: %w", err)
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "./" + managerDropInPath, Mode: 0o644, Size: int64(len(managerDropIn)), ModTime: mtime}); err != nil {
		return fmt.Errorf("writing image tar: %w", err)
	}
	if _, err := io.WriteString(tw, managerDropIn); err != nil {
		return fmt.Errorf("writing image tar: %w", err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing image tar: %w", err)
	}
	return nil
}
