# What the nixos2docker builder stage evaluates (written next to plan.json,
# body.nix and the module files by nixeval; see nixeval/nixeval.go).
#
#   nix-instantiate -I nixos2docker=DIR DIR/eval.nix -A spec     # the image-spec derivation
#   nix-instantiate -I nixos2docker=DIR --eval --strict --json DIR/eval.nix -A targets
#
# Evaluation is restricted (restrict-eval in nix.conf): this directory, given
# with -I, and the store are all it reads; the plan comes as a file, never
# from the environment.
#
# plan.json: { flake, target, nixpkgs, system, body }. flake and nixpkgs are
# flake references Nix can fetch (relative ones already resolved against the
# build context); body says whether ./body.nix exists.
#
# Errors meant for the user's file are thrown as "[nixos2docker:WHERE] …",
# WHERE naming what to point at (flake, nixpkgs, body, platform): nixeval's
# MapError turns them into located errors.
let
  plan = builtins.fromJSON (builtins.readFile ./plan.json);
  module = ./nixos/docker-image.nix;
  body = ./body.nix;

  fail = where: msg: throw "[nixos2docker:${where}] ${msg}";
  quoteList = names: builtins.concatStringsSep ", " (map (n: "\"${n}\"") names);

  # Nix 2.8 (Debian bookworm) rejects "dir" on path: URLs but accepts it on
  # a bare absolute path (which it reads as path: outside a git checkout).
  getFlake =
    ref:
    let
      bare = builtins.substring 5 (builtins.stringLength ref) ref;
      oldNix = builtins.compareVersions builtins.nixVersion "2.10" < 0;
    in
    builtins.getFlake (
      if oldNix && builtins.substring 0 6 ref == "path:/" && builtins.match ".*[?&]dir=.*" ref != null then bare else ref
    );

  flake = getFlake plan.flake;
  configs =
    if flake ? nixosConfigurations then
      flake.nixosConfigurations
    else
      fail "flake" "the flake ${plan.flake} has no nixosConfigurations output, so there is no NixOS system to build";
  names = builtins.attrNames configs;

  target =
    if plan.target != "" then
      if configs ? ${plan.target} then
        plan.target
      else if names == [ ] then
        fail "flake" "unknown target \"${plan.target}\": the flake ${plan.flake} has no NixOS configurations"
      else
        fail "flake" "unknown target \"${plan.target}\": the flake ${plan.flake} has these NixOS configurations: ${quoteList names}"
    else if builtins.length names == 1 then
      builtins.head names
    else if names == [ ] then
      fail "flake" "the flake ${plan.flake} has no NixOS configurations (nixosConfigurations is empty)"
    else
      fail "flake" "the flake ${plan.flake} has ${toString (builtins.length names)} NixOS configurations (${quoteList names}): choose one with --target or \"# flake=…#<name>\"";

  # The body is image-only configuration, applied through the variant.
  variantModule = {
    virtualisation.dockerVariant = {
      imports = [ body ];
    };
  };

  fromFlake =
    let
      cfg = configs.${target};
      # A NixOS system has extendModules; the toy example and other
      # hand-made configurations only have config.system.build.dockerImageSpec.
      isNixos = cfg ? extendModules;
      hasModule = isNixos && cfg ? options && cfg.options ? virtualisation.dockerImage;
      extended =
        if !isNixos then
          if plan.body then
            fail "body" "the body needs a NixOS configuration to extend, but nixosConfigurations.${target} of ${plan.flake} is not one (it has no extendModules); remove the body or point the flake directive at a NixOS system"
          else
            cfg
        else if hasModule && !plan.body then
          cfg
        else
          cfg.extendModules {
            modules = (if hasModule then [ ] else [ module ]) ++ (if plan.body then [ variantModule ] else [ ]);
          };
    in
    extended.config.system.build.dockerImageSpec
      or (fail "flake" "nixosConfigurations.${target} of ${plan.flake} has no config.system.build.dockerImageSpec");

  nixpkgs = getFlake plan.nixpkgs;
  fromNixpkgs =
    if !(nixpkgs ? lib.nixosSystem) then
      fail "nixpkgs" "${plan.nixpkgs} is not nixpkgs: it has no lib.nixosSystem"
    else
      (nixpkgs.lib.nixosSystem {
        modules = [
          module
          body
          { nixpkgs.hostPlatform = nixpkgs.lib.mkDefault plan.system; }
        ];
      }).config.system.build.dockerImageSpec;

  spec0 = if plan.flake != "" then fromFlake else fromNixpkgs;
  # The builder stage runs on the target platform and never cross-compiles:
  # a configuration for another system cannot be built here.
  spec =
    if spec0.system != plan.system then
      fail "platform" "the configuration is for ${spec0.system}, but this build is for ${plan.system}: build it for the platform its system runs on (--platform), or pick a configuration for ${plan.system}"
    else
      spec0;
in
{
  inherit spec;
  targets = names;
}
