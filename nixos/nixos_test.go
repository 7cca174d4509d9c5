// Package nixos_test checks the NixOS module side of nixos2docker with real
// Nix (Debian's nix-bin is enough): every .nix file parses, the module's option
// layer evaluates with nixpkgs' real lib (../shared/nixpkgs-lib), the
// module's own spec and image derivations build (busybox standing in for
// nixpkgs' tools, a stub toplevel, this repository's assembler), and the toy
// example's image spec, built by the real nixos/lib/image-spec.nix, is read by
// the Go parser of the spec (imagespec), so the writer and the reader
// cannot drift apart.
//
// What cannot run here: a real NixOS closure (no nixpkgs on these machines)
// and the flake's VM test (needs nixpkgs and KVM): `nix flake check` runs it
// on a machine that has both.
//
// Without nix-instantiate/nix on PATH the tests skip, but fail when CI is set.
package nixos_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixos2docker/nixos2docker/imagespec"
	"github.com/nixos2docker/nixos2docker/internal/testenv"
)

type result struct {
	stdout, stderr string
	err            error
}

func run(t *testing.T, dir, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NIX_CONFIG="+testenv.NixConfig)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return result{out.String(), errb.String(), err}
}

func TestNixFilesParse(t *testing.T) {
	nixInstantiate := testenv.Need(t, "nix-instantiate")
	root := testenv.RepoRoot(t)
	var files []string
	for _, top := range []string{"nixos", "examples", "flake.nix"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			if !d.IsDir() && strings.HasSuffix(p, ".nix") {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("walking %s: %v", top, err)
		}
	}
	for _, must := range []string{"flake.nix", "nixos/docker-image.nix", "nixos/docker-container.nix", "nixos/lib/image-spec.nix", "examples/toy/flake.nix"} {
		if !slices.Contains(files, filepath.Join(root, must)) {
			t.Errorf("%s is missing", must)
		}
	}
	for _, f := range files {
		if r := run(t, root, nixInstantiate, "--parse", f); r.err != nil {
			t.Errorf("%s does not parse: %v\n%s", f, r.err, r.stderr)
		}
	}
}

// evalCase evaluates one attribute of nixos/tests/cases.nix.
func evalCase(t *testing.T, name string) result {
	t.Helper()
	nixInstantiate := testenv.Need(t, "nix-instantiate")
	lib := testenv.NixpkgsLib(t)
	root := testenv.RepoRoot(t)
	return run(t, root, nixInstantiate, "--eval", "--strict", "--json",
		filepath.Join(root, "nixos", "tests", "cases.nix"),
		"--arg", "lib", "import "+lib, "-A", name)
}

func evalJSON(t *testing.T, name string, v any) {
	t.Helper()
	r := evalCase(t, name)
	if r.err != nil {
		t.Fatalf("evaluating %s: %v\n%s", name, r.err, r.stderr)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("decoding %s: %v\n%s", name, err, r.stdout)
	}
}

func TestOptionDefaults(t *testing.T) {
	var d struct {
		Name          string   `json:"name"`
		Tag           string   `json:"tag"`
		MaxLayers     int      `json:"maxLayers"`
		ExtraContents []string `json:"extraContents"`
		Healthcheck   bool     `json:"healthcheck"`
		PatchSystemd  bool     `json:"patchSystemd"`
	}
	evalJSON(t, "defaults", &d)
	// networking.hostName's own default is "nixos".
	if d.Name != "nixos" || d.Tag != "latest" || d.MaxLayers != 125 || len(d.ExtraContents) != 0 || !d.Healthcheck || !d.PatchSystemd {
		t.Errorf("defaults = %+v", d)
	}
	var name string
	evalJSON(t, "defaultNameWithoutHostName", &name)
	if name != "nixos-docker" {
		t.Errorf("name without a host name = %q, want nixos-docker", name)
	}
}

type summary struct {
	IsContainer         bool     `json:"isContainer"`
	NixStoreMountOpts   []string `json:"nixStoreMountOpts"`
	SpecialFileSystems  []string `json:"specialFileSystems"`
	Nscd                bool     `json:"nscd"`
	Resolved            bool     `json:"resolved"`
	Timesyncd           bool     `json:"timesyncd"`
	Oomd                bool     `json:"oomd"`
	EmergencyMode       bool     `json:"emergencyMode"`
	Firewall            bool     `json:"firewall"`
	UseDHCP             bool     `json:"useDHCP"`
	EtcHosts            bool     `json:"etcHosts"`
	HostnameActivation  *string  `json:"hostnameActivation"`
	MachineIDActivation *string  `json:"machineIdActivation"`
	Masked              []string `json:"masked"`
	Services            []string `json:"services"`
	RootSlice           *string  `json:"rootSlice"`
	StandardOutput      *string  `json:"defaultStandardOutput"`
	MaskedSockets       []string `json:"maskedSockets"`
	SystemdPatches      []string `json:"systemdPatches"`
	Toplevel            string   `json:"toplevel"`
	Tag                 string   `json:"tag"`
	// SshdStartWhenNeeded is services.openssh.startWhenNeeded.
	SshdStartWhenNeeded bool `json:"sshdStartWhenNeeded"`
	// NixDBService is the variant's nixos2docker-nix-db unit, if any.
	NixDBService *struct {
		WantedBy   []string          `json:"wantedBy"`
		Before     []string          `json:"before"`
		UnitConfig map[string]any    `json:"unitConfig"`
		Service    map[string]string `json:"serviceConfig"`
	} `json:"nixDbService"`
}

func TestVariantLeavesBaseUntouched(t *testing.T) {
	var base, variant summary
	evalJSON(t, "base", &base)
	evalJSON(t, "variant", &variant)

	if base.IsContainer || !reflect.DeepEqual(base.NixStoreMountOpts, []string{"ro", "nodev", "nosuid"}) ||
		!base.Nscd || !base.Timesyncd || !base.Oomd || !base.EmergencyMode || !base.Firewall || !base.UseDHCP || !base.EtcHosts ||
		len(base.Masked) != 0 || base.RootSlice != nil || len(base.SystemdPatches) != 0 || base.Tag != "latest" {
		t.Errorf("the base configuration was changed: %+v", base)
	}
	if !reflect.DeepEqual(base.Services, []string{"myapp"}) {
		t.Errorf("base services = %v, want only the base's own myapp", base.Services)
	}

	// nixpkgs has no hostname activation script since 2023 (NixOS/nixpkgs#263203):
	// nothing to override.
	if base.HostnameActivation != nil || variant.HostnameActivation != nil {
		t.Errorf("hostname activation: base %v, variant %v; want none in both", base.HostnameActivation, variant.HostnameActivation)
	}
	// The image makes its machine ID before systemd starts; the base does not.
	if variant.MachineIDActivation == nil || !strings.Contains(*variant.MachineIDActivation, "/bin/systemd-machine-id-setup") || base.MachineIDActivation != nil {
		t.Errorf("machine-id activation: base %v, variant %v; want systemd-machine-id-setup in the image only", base.MachineIDActivation, variant.MachineIDActivation)
	}
	// container-config.nix's mkDefault true is beaten: sshd runs as a daemon
	// whose messages reach docker logs (docker-container.nix).
	if base.SshdStartWhenNeeded || variant.SshdStartWhenNeeded {
		t.Errorf("services.openssh.startWhenNeeded: base %v, variant %v; want false in both", base.SshdStartWhenNeeded, variant.SshdStartWhenNeeded)
	}
	var explicit bool
	evalJSON(t, "sshdExplicit", &explicit)
	if !explicit {
		t.Errorf("a base's explicit services.openssh.startWhenNeeded = true must win in the variant")
	}
	if !variant.IsContainer || len(variant.NixStoreMountOpts) != 0 || len(variant.SpecialFileSystems) != 0 ||
		variant.Nscd || variant.Resolved || variant.Timesyncd || variant.Oomd || variant.EmergencyMode || variant.Firewall || variant.UseDHCP || variant.EtcHosts {
		t.Errorf("variant is not a container configuration: %+v", variant)
	}
	for _, u := range []string{"systemd-sysctl", "systemd-logind", "getty@", "serial-getty@", "systemd-rfkill", "systemd-hibernate-resume", "systemd-networkd", "firewall", "suid-sgid-wrappers", "systemd-remount-fs"} {
		if !slices.Contains(variant.Masked, u) {
			t.Errorf("variant does not mask %s (masked: %v)", u, variant.Masked)
		}
	}
	// Kept: they run unprivileged with the patched systemd (patches/systemd/README.md).
	for _, u := range []string{"systemd-journald", "systemd-journal-flush", "systemd-tmpfiles-setup-dev"} {
		if slices.Contains(variant.Masked, u) {
			t.Errorf("variant masks %s, which works in the container", u)
		}
	}
	if !slices.Contains(variant.MaskedSockets, "systemd-rfkill") || slices.Contains(variant.MaskedSockets, "systemd-journald") {
		t.Errorf("variant masked sockets = %v", variant.MaskedSockets)
	}
	// Services' output reaches docker logs through the console patch.
	if variant.StandardOutput == nil || *variant.StandardOutput != "tty" || base.StandardOutput != nil {
		t.Errorf("DefaultStandardOutput: variant %v, base %v; want tty and unset", variant.StandardOutput, base.StandardOutput)
	}
	if !slices.Contains(variant.Services, "myapp") || slices.Contains(variant.Masked, "myapp") {
		t.Errorf("the base's service myapp must be in the variant, unmasked: %v", variant.Services)
	}
	if !slices.Contains(variant.Services, "only-in-image") || slices.Contains(base.Services, "only-in-image") {
		t.Errorf("virtualisation.dockerVariant settings must reach the variant only")
	}
	if variant.Tag != "variant" {
		t.Errorf("variant's dockerImage.tag = %q, want the dockerVariant value", variant.Tag)
	}
	if variant.RootSlice == nil || !strings.Contains(*variant.RootSlice, "memory") {
		t.Errorf("variant's -.slice DisableControllers = %v", variant.RootSlice)
	}
	// The fixture series lists 0002 before 0001: the order of the series wins.
	if !reflect.DeepEqual(variant.SystemdPatches, []string{"0002-second.patch", "0001-first.patch"}) {
		t.Errorf("variant's systemd patches = %v, want the fixture series in order", variant.SystemdPatches)
	}
	if variant.Toplevel == base.Toplevel {
		t.Errorf("variant and base have the same toplevel %s", base.Toplevel)
	}
}

func TestSpecImageConfig(t *testing.T) {
	var s struct {
		Version         int               `json:"version"`
		ImageName       string            `json:"imageName"`
		ImageTag        string            `json:"imageTag"`
		MaxLayers       int               `json:"maxLayers"`
		System          string            `json:"system"`
		Config          json.RawMessage   `json:"config"`
		Skeleton        []imagespec.Entry `json:"skeleton"`
		Toplevel        string            `json:"toplevel"`
		ClosureRoots    []string          `json:"closureRoots"`
		VariantToplevel string            `json:"variantToplevel"`
		BaseToplevel    string            `json:"baseToplevel"`
		ImageSpecName   string            `json:"imageSpecName"`
		DockerImageName string            `json:"dockerImageName"`
	}
	evalJSON(t, "spec", &s)
	if s.Version != imagespec.Version || s.ImageName != "web" || s.ImageTag != "variant" || s.MaxLayers != 125 || s.System != "x86_64-linux" {
		t.Errorf("spec header = %d %q %q %d %q", s.Version, s.ImageName, s.ImageTag, s.MaxLayers, s.System)
	}
	if s.Toplevel != s.VariantToplevel || s.Toplevel == s.BaseToplevel {
		t.Errorf("spec toplevel %s, want the variant's %s (base: %s)", s.Toplevel, s.VariantToplevel, s.BaseToplevel)
	}
	if !reflect.DeepEqual(s.ClosureRoots, []string{s.VariantToplevel}) {
		t.Errorf("closure roots = %v", s.ClosureRoots)
	}
	if s.ImageSpecName != "docker-image-spec-web.json" || s.DockerImageName != "docker-image-web.tar" {
		t.Errorf("derivation names: %q, %q", s.ImageSpecName, s.DockerImageName)
	}

	// The config decodes into the Go side's type.
	var c struct {
		Entrypoint   []string
		Env          []string
		StopSignal   string
		Labels       map[string]string
		ExposedPorts map[string]struct{}
		Volumes      map[string]struct{}
		Healthcheck  *struct {
			Test          []string
			Interval      time.Duration
			StartPeriod   time.Duration
			StartInterval time.Duration
			Retries       int
		}
	}
	if err := json.Unmarshal(s.Config, &c); err != nil {
		t.Fatalf("config: %v", err)
	}
	if !reflect.DeepEqual(c.Entrypoint, []string{s.VariantToplevel + "/init"}) {
		t.Errorf("Entrypoint = %v, want the variant's init", c.Entrypoint)
	}
	if len(c.Env) == 0 || c.Env[0] != "container=docker" {
		t.Errorf("Env = %v, want container=docker first", c.Env)
	}
	var path string
	for _, e := range c.Env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	if !slices.Contains(strings.Split(path, ":"), "/run/current-system/sw/bin") {
		t.Errorf("PATH %q does not reach systemctl (/run/current-system/sw/bin)", path)
	}
	if !slices.Contains(c.Env, "TZ=UTC") {
		t.Errorf("Env %v lacks the dockerImage.env TZ=UTC", c.Env)
	}
	if c.StopSignal != "SIGRTMIN+3" {
		t.Errorf("StopSignal = %q", c.StopSignal)
	}
	if c.Labels["org.example.team"] != "web" || c.Labels["org.opencontainers.image.title"] != "web" {
		t.Errorf("Labels = %v", c.Labels)
	}
	if _, ok := c.ExposedPorts["80/tcp"]; !ok || len(c.ExposedPorts) != 2 {
		t.Errorf("ExposedPorts = %v, want 80/tcp and 53/udp", c.ExposedPorts)
	}
	if _, ok := c.Volumes["/var/lib/web"]; !ok {
		t.Errorf("Volumes = %v", c.Volumes)
	}
	if c.Healthcheck == nil || !slices.Contains(c.Healthcheck.Test, "is-system-running") || c.Healthcheck.Interval != 30*time.Second ||
		c.Healthcheck.StartInterval != 2*time.Second {
		t.Errorf("Healthcheck = %+v", c.Healthcheck)
	}
	var reg struct {
		ImageName string `json:"imageName"`
		SpecName  string `json:"specName"`
	}
	evalJSON(t, "registryName", &reg)
	if reg.ImageName != "localhost:5000/team/web-app" || reg.SpecName != "docker-image-spec-localhost-5000-team-web-app.json" {
		t.Errorf("registry name: %+v", reg)
	}
	var off bool
	evalJSON(t, "healthcheckOff", &off)
	if off {
		t.Errorf("healthcheck.enable = false still gives a Healthcheck")
	}

	sk := map[string]imagespec.Entry{}
	for _, e := range s.Skeleton {
		sk[e.Path] = e
	}
	if e := sk["/init"]; e.Type != imagespec.TypeSymlink || e.Target != s.VariantToplevel+"/init" {
		t.Errorf("/init = %+v", e)
	}
	if e := sk["/tmp"]; e.Type != imagespec.TypeDir || e.FileMode() != 0o1777 {
		t.Errorf("/tmp = %+v", e)
	}
	// The system profile as nix-env --set leaves it, and profiles as GC roots.
	if e := sk["/nix/var/nix/profiles/system"]; e.Type != imagespec.TypeSymlink || e.Target != "system-1-link" {
		t.Errorf("/nix/var/nix/profiles/system = %+v, want a link to system-1-link", e)
	}
	if e := sk["/nix/var/nix/profiles/system-1-link"]; e.Type != imagespec.TypeSymlink || e.Target != s.VariantToplevel {
		t.Errorf("/nix/var/nix/profiles/system-1-link = %+v, want a link to the toplevel", e)
	}
	if e := sk["/nix/var/nix/gcroots/profiles"]; e.Type != imagespec.TypeSymlink || e.Target != "/nix/var/nix/profiles" {
		t.Errorf("/nix/var/nix/gcroots/profiles = %+v", e)
	}
}

// TestNixDatabase: with Nix in the image (nix.enable, NixOS's default) the
// spec asks the assembler for the closure's registration and a unit loads it
// before any Nix client runs; without Nix, neither.
func TestNixDatabase(t *testing.T) {
	var s struct {
		NixRegistration *string `json:"nixRegistration"`
	}
	evalJSON(t, "spec", &s)
	const reg = "/nix/var/nix/nixos2docker-registration"
	if s.NixRegistration == nil || *s.NixRegistration != reg {
		t.Errorf("spec nixRegistration = %v, want %s", s.NixRegistration, reg)
	}
	var variant summary
	evalJSON(t, "variant", &variant)
	u := variant.NixDBService
	if u == nil {
		t.Fatalf("the variant has no nixos2docker-nix-db service")
	}
	if u.Service["StandardInput"] != "file:"+reg || !strings.HasSuffix(u.Service["ExecStart"], "/bin/nix-store --load-db") ||
		!strings.HasSuffix(u.Service["ExecStartPost"], "/bin/rm -f "+reg) || u.UnitConfig["ConditionPathExists"] != reg ||
		u.UnitConfig["DefaultDependencies"] != false {
		t.Errorf("nixos2docker-nix-db = %+v", u)
	}
	for _, b := range []string{"nix-daemon.socket", "nix-daemon.service", "sysinit.target"} {
		if !slices.Contains(u.Before, b) {
			t.Errorf("nixos2docker-nix-db is not ordered before %s: %v", b, u.Before)
		}
	}
	var base summary
	evalJSON(t, "base", &base)
	if base.NixDBService != nil {
		t.Errorf("the base configuration got the image's nix-db unit")
	}
	var noNix struct {
		NixRegistration *string `json:"nixRegistration"`
		NixDBService    bool    `json:"nixDbService"`
	}
	evalJSON(t, "noNix", &noNix)
	if noNix.NixRegistration != nil || noNix.NixDBService {
		t.Errorf("nix.enable = false: %+v, want no registration and no unit", noNix)
	}
}

// TestContainerConfigConflicts: nixpkgs' container-config.nix (copied in
// tests/nixpkgs/) defines security.audit.enable, services.udev.enable,
// boot.kernel.enable and boot.modprobeConfig.enable at plain priority; a
// base that defines them too still evaluates, the variant has nixpkgs'
// container values and the base keeps its own.
func TestContainerConfigConflicts(t *testing.T) {
	var r struct {
		Base, Variant map[string]bool
		Toplevel      string
	}
	evalJSON(t, "hardenedBase", &r)
	for _, o := range []string{"audit", "udev", "kernel", "modprobe"} {
		if !r.Base[o] || r.Variant[o] {
			t.Errorf("%s: base %v, variant %v; want true and false", o, r.Base[o], r.Variant[o])
		}
	}
	if r.Toplevel == "" {
		t.Errorf("the variant's toplevel did not evaluate")
	}
}

// TestMountingFeatures: the /etc overlay and nixos-init of a base (with
// what nixpkgs' own assertions require) are off in the image, with a
// warning naming the option and where it was set; the variant's toplevel
// passes nixpkgs' assertions (tests/nixpkgs/system).
func TestMountingFeatures(t *testing.T) {
	r := evalCase(t, "mountingFeatures")
	if r.err != nil {
		t.Fatalf("evaluating mountingFeatures: %v\n%s", r.err, r.stderr)
	}
	var m struct {
		Base, Variant   []bool
		BaseWarnings    []string
		VariantWarnings []string
	}
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Base, []bool{true, true}) || !slices.Equal(m.Variant, []bool{false, false}) {
		t.Errorf("overlay, nixos-init: base %v, variant %v; want on in the base, off in the image", m.Base, m.Variant)
	}
	if len(m.BaseWarnings) != 0 || len(m.VariantWarnings) != 2 {
		t.Errorf("warnings: base %q, variant %q", m.BaseWarnings, m.VariantWarnings)
	}
	for _, o := range []string{"system.etc.overlay.enable", "system.nixos-init.enable"} {
		want := "nixos2docker: " + o + " is turned off in the Docker image (set in etc-overlay.nix)"
		if !strings.Contains(r.stderr, want) {
			t.Errorf("evaluating the variant's toplevel does not warn %q:\n%s", want, r.stderr)
		}
	}
}

// TestForcedSystemd: a base that forces systemd.package beats the variant's
// patched one; evaluation fails naming the definition (TestBadInput) unless
// accepted with allowUnpatchedSystemd, and a systemd patched already (by
// overlays.default) is accepted and not patched twice.
func TestForcedSystemd(t *testing.T) {
	var allowed struct {
		Patches   []string `json:"patches"`
		ImageName string   `json:"imageName"`
	}
	evalJSON(t, "forcedSystemdAllowed", &allowed)
	if len(allowed.Patches) != 0 || allowed.ImageName != "nixos" {
		t.Errorf("allowUnpatchedSystemd: %+v, want the stock systemd in a spec that evaluates", allowed)
	}
	var patched []string
	evalJSON(t, "forcedPatchedSystemd", &patched)
	if !slices.Equal(patched, []string{"0002-second.patch", "0001-first.patch"}) {
		t.Errorf("a forced, already patched systemd has patches %v, want the fixture series once", patched)
	}
}

func TestSystemdPatchSelection(t *testing.T) {
	var fixture, real []string
	evalJSON(t, "supportedFixture", &fixture)
	// 250-no-series has no series file: not a supported version.
	if !reflect.DeepEqual(fixture, []string{"259", "262"}) {
		t.Errorf("supported (fixture) = %v, want [259 262]", fixture)
	}
	evalJSON(t, "supportedReal", &real)
	entries, err := os.ReadDir(filepath.Join(testenv.RepoRoot(t), "patches", "systemd"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(testenv.RepoRoot(t), "patches", "systemd", e.Name(), "series")); err == nil && e.IsDir() {
			want = append(want, e.Name())
		}
	}
	slices.Sort(want)
	if !reflect.DeepEqual(real, want) || len(real) == 0 {
		t.Errorf("supported (patches/systemd) = %v, want %v", real, want)
	}
	var version string
	evalJSON(t, "unpatched", &version)
	if version != "255.4" {
		t.Errorf("patchSystemd = false: variant systemd %q, want the base's 255.4", version)
	}
}

func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"wrongType", []string{"virtualisation.dockerImage.maxLayers", "is not of type", "at least 2"}},
		{"maxLayersTooSmall", []string{"virtualisation.dockerImage.maxLayers", "at least 2"}},
		{"maxLayersTooMany", []string{"virtualisation.dockerImage.maxLayers", "at most 125"}},
		{"badName", []string{"virtualisation.dockerImage.name", "Web App"}},
		{"badPort", []string{"virtualisation.dockerImage.exposedPorts", "http"}},
		{"nested", []string{"virtualisation.dockerVariant' is set inside `virtualisation.dockerVariant'"}},
		{"unsupportedSystemd", []string{"systemd 255.4", "Supported systemd major versions: 259, 262", "virtualisation.dockerImage.patchSystemd = false"}},
		{"forcedSystemd", []string{"systemd.package is not the patched systemd", "forced-systemd.nix", "patches/systemd/262", "virtualisation.dockerImage.allowUnpatchedSystemd = true"}},
		{"badRegistration", []string{"nixRegistration must be an absolute path outside /nix/store", "var/nix-registration"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := evalCase(t, tc.name)
			if r.err == nil {
				t.Fatalf("evaluation succeeded (%s), want an error", strings.TrimSpace(r.stdout))
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("error lacks %q:\n%s", w, r.stderr)
				}
			}
		})
	}
}

// toyTree copies nixos/ and examples/toy into a fresh git work tree (files
// added, nothing committed: Nix reads the dirty tree), with message.txt
// replaced when message is not empty.
func toyTree(t *testing.T, git, message string) string {
	t.Helper()
	tree := t.TempDir()
	testenv.CopyTree(t, testenv.RepoRoot(t), tree, "nixos", "examples/toy")
	if message != "" {
		if err := os.WriteFile(filepath.Join(tree, "examples", "toy", "message.txt"), []byte(message), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}} {
		if r := run(t, tree, git, args...); r.err != nil {
			t.Fatalf("git %v: %v\n%s", args, r.err, r.stderr)
		}
	}
	return tree
}

// TestToyOneChange: editing examples/toy/message.txt changes toy-message and
// what depends on it, and nothing else (what the frontend's "change one
// derivation" tests rely on). Evaluation only.
func TestToyOneChange(t *testing.T) {
	nix := testenv.Need(t, "nix")
	git := testenv.Need(t, "git")
	parts := func(tree string) map[string]string {
		t.Helper()
		r := run(t, tree, nix, "eval", "--json", "git+file://"+tree+"?dir=examples/toy#nixosConfigurations.toy.parts",
			"--apply", "builtins.mapAttrs (n: v: v.outPath)")
		if r.err != nil {
			t.Fatalf("nix eval parts: %v\n%s", r.err, r.stderr)
		}
		m := map[string]string{}
		if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
			t.Fatalf("nix eval parts: %v\n%s", err, r.stdout)
		}
		return m
	}
	before := parts(toyTree(t, git, ""))
	after := parts(toyTree(t, git, "a changed message\n"))
	changed := map[string]bool{"message": true, "app": true, "toplevel": true}
	for _, n := range []string{"busybox", "lib", "message", "buildtool", "app", "blob", "extra", "toplevel"} {
		if before[n] == "" {
			t.Errorf("parts lack %s: %v", n, before)
			continue
		}
		if got := before[n] != after[n]; got != changed[n] {
			t.Errorf("%s: changed = %v, want %v (%s -> %s)", n, got, changed[n], before[n], after[n])
		}
	}
}

// TestToyImageSpec builds the toy's image spec with real Nix and reads it
// with the Go parser. The flake is referenced with its whole tree
// (git+file://…?dir=examples/toy; Nix 2.8 rejects `dir` on path: URLs, newer
// Nix also takes path:…?dir=) from a copy holding only nixos/ and examples/toy,
// so stray files of the work tree are not copied into the store.
func TestToyImageSpec(t *testing.T) {
	nix := testenv.Need(t, "nix")
	git := testenv.Need(t, "git")
	if _, err := os.Stat("/bin/busybox"); err != nil {
		if testenv.InCI() {
			t.Fatalf("/bin/busybox missing (CI must install busybox-static): %v", err)
		}
		t.Skipf("/bin/busybox missing (apt-get install busybox-static): %v", err)
	}
	root := testenv.RepoRoot(t)
	tree := toyTree(t, git, "")
	ref := "git+file://" + tree + "?dir=examples/toy#nixosConfigurations.toy.config.system.build.dockerImageSpec"
	r := run(t, tree, nix, "build", "--no-link", "--json", ref)
	if r.err != nil {
		t.Fatalf("nix build %s: %v\n%s", ref, r.err, r.stderr)
	}
	var built []struct {
		Outputs map[string]string `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &built); err != nil || len(built) != 1 {
		t.Fatalf("nix build --json: %v\n%s", err, r.stdout)
	}
	out := built[0].Outputs["out"]
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := imagespec.Parse(data)
	if err != nil {
		t.Fatalf("imagespec.Parse(%s): %v", out, err)
	}

	byName := map[string]imagespec.Path{}
	for _, p := range spec.Closure {
		name := filepath.Base(p.Path)[33:]
		byName[name] = p
	}
	want := []string{"toy-busybox", "toy-lib", "toy-lib-doc", "toy-message", "toy-app", "toy-blob", "toy-system", "toy-extra"}
	for _, n := range want {
		if _, ok := byName[n]; !ok {
			t.Errorf("closure lacks %s", n)
		}
	}
	if len(byName) != len(want) {
		t.Errorf("closure has %d paths, want %d: %v", len(byName), len(want), spec.Paths())
	}
	if _, ok := byName["toy-buildtool"]; ok {
		t.Errorf("the build-time-only toy-buildtool is in the closure")
	}
	app := byName["toy-app"]
	for _, n := range []string{"toy-lib", "toy-lib-doc", "toy-message"} {
		if !slices.Contains(app.References, byName[n].Path) {
			t.Errorf("toy-app does not reference %s: %v", n, app.References)
		}
	}
	if blob := byName["toy-blob"]; blob.NarSize < 64<<20 {
		t.Errorf("toy-blob narSize %d, want >= 64 MiB", blob.NarSize)
	}

	if spec.ImageName != "toy" || spec.ImageTag != "latest" || spec.MaxLayers != 125 {
		t.Errorf("spec header: %q %q %d", spec.ImageName, spec.ImageTag, spec.MaxLayers)
	}
	if spec.Toplevel != byName["toy-system"].Path {
		t.Errorf("toplevel %s, want toy-system", spec.Toplevel)
	}
	if !reflect.DeepEqual(spec.Config.Entrypoint, []string{spec.Toplevel + "/init"}) || spec.Config.StopSignal != "SIGRTMIN+3" ||
		!slices.Contains(spec.Config.Env, "container=docker") {
		t.Errorf("config = %+v", spec.Config)
	}
	sk := map[string]imagespec.Entry{}
	for _, e := range spec.Skeleton {
		sk[e.Path] = e
	}
	if sk["/init"].Target != spec.Toplevel+"/init" || sk["/bin/sh"].Target != spec.Toplevel+"/sw/bin/sh" || sk["/tmp"].FileMode() != 0o1777 {
		t.Errorf("skeleton = %+v", spec.Skeleton)
	}

	// The message is examples/toy/message.txt (the one derivation the
	// "change one derivation" tests edit).
	msg, err := os.ReadFile(byName["toy-message"].Path)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(root, "examples", "toy", "message.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if string(msg) != string(src) {
		t.Errorf("toy-message = %q, want message.txt %q", msg, src)
	}

	// The spec references its whole closure, so a derivation that takes the
	// spec as input (system.build.dockerImage) sees every path it lists.
	nixStore := testenv.Need(t, "nix-store")
	r = run(t, tree, nixStore, "--query", "--requisites", out)
	if r.err != nil {
		t.Fatalf("nix-store -qR %s: %v\n%s", out, r.err, r.stderr)
	}
	for _, p := range spec.Paths() {
		if !strings.Contains(r.stdout, p+"\n") {
			t.Errorf("the spec output does not keep %s alive", p)
		}
	}

	// The init prints its line and exits 0 on SIGRTMIN+3 and on SIGTERM.
	for _, sig := range []syscall.Signal{syscall.Signal(37), syscall.SIGTERM} {
		checkInit(t, spec.Toplevel+"/init", sig)
	}
}

func checkInit(t *testing.T, init string, sig syscall.Signal) {
	t.Helper()
	cmd := exec.Command(init)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", init, err)
	}
	lines := make(chan string, 16)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			lines <- s.Text()
		}
		close(lines)
	}()
	deadline := time.After(10 * time.Second)
	for started := false; !started; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("%s ended before printing its start line", init)
			}
			started = l == "toy init: started"
		case <-deadline:
			_ = cmd.Process.Kill()
			t.Fatalf("%s printed no start line in 10 s", init)
		}
	}
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for range lines {
		}
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("init after signal %d: %v, want exit 0", sig, err)
		}
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		t.Errorf("init did not stop within 5 s of signal %d", sig)
	}
}

// TestFlakeOutputs evaluates flake.nix's outputs with nixpkgs replaced by its
// lib and stub packages: the attribute layout the README promises.
func TestFlakeOutputs(t *testing.T) {
	var f struct {
		Outputs             []string            `json:"outputs"`
		NixosModules        []string            `json:"nixosModules"`
		ModuleIsOuter       bool                `json:"moduleIsOuter"`
		NixosConfigurations []string            `json:"nixosConfigurations"`
		Packages            map[string][]string `json:"packages"`
		Checks              map[string][]string `json:"checks"`
		OverlaySystemd      struct {
			Version string   `json:"version"`
			Patches []string `json:"patches"`
		} `json:"overlaySystemd"`
	}
	evalJSON(t, "flake", &f)
	for _, o := range []string{"nixosModules", "overlays", "nixosConfigurations", "packages", "checks"} {
		if !slices.Contains(f.Outputs, o) {
			t.Errorf("flake outputs lack %s: %v", o, f.Outputs)
		}
	}
	if !reflect.DeepEqual(f.NixosModules, []string{"default", "docker-image"}) || !f.ModuleIsOuter {
		t.Errorf("nixosModules = %v (default is nixos/docker-image.nix: %v)", f.NixosModules, f.ModuleIsOuter)
	}
	if !slices.Contains(f.NixosConfigurations, "example") {
		t.Errorf("nixosConfigurations = %v", f.NixosConfigurations)
	}
	for _, sys := range []string{"x86_64-linux", "aarch64-linux"} {
		for _, p := range []string{"dockerImage", "nixos2docker"} {
			if !slices.Contains(f.Packages[sys], p) {
				t.Errorf("packages.%s lacks %s: %v", sys, p, f.Packages[sys])
			}
		}
		if !slices.Contains(f.Checks[sys], "vm") {
			t.Errorf("checks.%s lacks vm: %v", sys, f.Checks[sys])
		}
	}
	// The overlay applies patches/systemd/262/series, in order.
	series, err := os.ReadFile(filepath.Join(testenv.RepoRoot(t), "patches", "systemd", "262", "series"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, l := range strings.Split(string(series), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			want = append(want, l)
		}
	}
	if f.OverlaySystemd.Version != "262.1" || !slices.Equal(f.OverlaySystemd.Patches, want) {
		t.Errorf("overlay systemd = %+v, want 262.1 with %v", f.OverlaySystemd, want)
	}
}

// TestModuleSpecBuilds builds the NixOS module's own image spec (not the
// toy's) with real Nix, the shell and tools being the toy's busybox and the
// toplevel the stub's, and reads it with the Go parser: the module's image
// config and skeleton decode into the Go types and pass validation.
func TestModuleSpecBuilds(t *testing.T) {
	nixBuild := testenv.Need(t, "nix-build")
	lib := testenv.NixpkgsLib(t)
	if _, err := os.Stat("/bin/busybox"); err != nil {
		if testenv.InCI() {
			t.Fatalf("/bin/busybox missing (CI must install busybox-static): %v", err)
		}
		t.Skipf("/bin/busybox missing (apt-get install busybox-static): %v", err)
	}
	root := testenv.RepoRoot(t)
	r := run(t, root, nixBuild, "--no-out-link", filepath.Join(root, "nixos", "tests", "cases.nix"),
		"--arg", "lib", "import "+lib, "-A", "buildableSpec")
	if r.err != nil {
		t.Fatalf("nix-build buildableSpec: %v\n%s", r.err, r.stderr)
	}
	out := strings.TrimSpace(r.stdout)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := imagespec.Parse(data)
	if err != nil {
		t.Fatalf("imagespec.Parse(%s): %v", out, err)
	}
	if spec.ImageName != "web" || spec.Config.StopSignal != "SIGRTMIN+3" || spec.Config.Healthcheck == nil ||
		spec.Config.Healthcheck.Interval != 30*time.Second || len(spec.Config.Healthcheck.Test) != 3 {
		t.Errorf("spec = %+v", spec.Config)
	}
	if _, ok := spec.Config.ExposedPorts["80/tcp"]; !ok {
		t.Errorf("ExposedPorts = %v", spec.Config.ExposedPorts)
	}
	if _, ok := spec.Config.Volumes["/var/lib/web"]; !ok {
		t.Errorf("Volumes = %v", spec.Config.Volumes)
	}
	if !reflect.DeepEqual(spec.Config.Entrypoint, []string{spec.Toplevel + "/init"}) || !strings.HasSuffix(spec.Toplevel, "-nixos-system-web-stub") {
		t.Errorf("Entrypoint %v, toplevel %s", spec.Config.Entrypoint, spec.Toplevel)
	}
	if len(spec.Closure) != 1 || spec.Closure[0].Path != spec.Toplevel {
		t.Errorf("closure = %v, want the stub toplevel alone", spec.Paths())
	}
}

// TestModuleImageBuilds builds system.build.dockerImage of the module (the
// derivation that runs nixos2docker-assemble over the spec) with real Nix,
// the assembler being this repository's cmd/nixos2docker-assemble built here,
// and checks the archive is what `docker load` reads.
func TestModuleImageBuilds(t *testing.T) {
	nixBuild := testenv.Need(t, "nix-build")
	goTool := testenv.Need(t, "go")
	lib := testenv.NixpkgsLib(t)
	if _, err := os.Stat("/bin/busybox"); err != nil {
		if testenv.InCI() {
			t.Fatalf("/bin/busybox missing (CI must install busybox-static): %v", err)
		}
		t.Skipf("/bin/busybox missing (apt-get install busybox-static): %v", err)
	}
	root := testenv.RepoRoot(t)
	bin := filepath.Join(t.TempDir(), "nixos2docker-assemble")
	if r := run(t, root, goTool, "build", "-o", bin, "./cmd/nixos2docker-assemble"); r.err != nil {
		t.Fatalf("go build ./cmd/nixos2docker-assemble: %v\n%s", r.err, r.stderr)
	}
	r := run(t, root, nixBuild, "--no-out-link", filepath.Join(root, "nixos", "tests", "cases.nix"),
		"--arg", "lib", "import "+lib, "--argstr", "assemblerBin", bin, "-A", "buildableImage")
	if r.err != nil {
		t.Fatalf("nix-build buildableImage: %v\n%s", r.err, r.stderr)
	}
	out := strings.TrimSpace(r.stdout)
	if !strings.HasSuffix(out, "-docker-image-web.tar") {
		t.Errorf("image output %s, want …-docker-image-web.tar", out)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading %s: %v", out, err)
		}
		if h.Typeflag == tar.TypeReg && (h.Name == "manifest.json" || strings.HasPrefix(h.Name, "blobs/")) && h.Size < 1<<20 {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = data
		}
	}
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("manifest.json: %v\n%s", err, files["manifest.json"])
	}
	m := manifest[0]
	if !reflect.DeepEqual(m.RepoTags, []string{"web:latest"}) {
		t.Errorf("RepoTags = %v", m.RepoTags)
	}
	// One store path and the skeleton, within maxLayers = 3.
	if len(m.Layers) != 2 {
		t.Errorf("%d layers, want 2 (the stub toplevel, the root skeleton)", len(m.Layers))
	}
	var cfg struct {
		Config struct {
			Entrypoint []string
			StopSignal string
			Env        []string
		} `json:"config"`
	}
	if err := json.Unmarshal(files[m.Config], &cfg); err != nil {
		t.Fatalf("image config %s: %v", m.Config, err)
	}
	if cfg.Config.StopSignal != "SIGRTMIN+3" || len(cfg.Config.Entrypoint) != 1 || !strings.HasSuffix(cfg.Config.Entrypoint[0], "-nixos-system-web-stub/init") ||
		!slices.Contains(cfg.Config.Env, "container=docker") {
		t.Errorf("image config = %+v", cfg.Config)
	}
}
