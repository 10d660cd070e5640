# The flake's outputs: names, shapes, and that module outputs need nothing but lib.
# Offline, `flake` is evaluated with only nixpkgs' lib (../lib/offline-flake.nix).
{
  lib,
  repo,
  flake,
  check,
  standIn,
  ...
}:
let
  systems = [
    "aarch64-darwin"
    "aarch64-linux"
    "x86_64-darwin"
    "x86_64-linux"
  ];
  standInPkgs = import ../lib/stand-in-pkgs.nix { inherit lib; };
  overlaid = lib.fix (lib.extends flake.overlays.default (_: standInPkgs));
  # The flake with the stand-in package set as nixpkgs.legacyPackages.
  withPkgs = import ../lib/offline-flake.nix {
    inherit lib repo;
    legacyPackages = lib.genAttrs systems (
      system: import ../lib/stand-in-pkgs.nix { inherit lib system; }
    );
  };
  devShell = withPkgs.devShells.x86_64-linux.default;
in
{
  "outputs: module, overlay and per-system names" =
    check.eq
      {
        # (a real flake's `self` also has inputs, outPath, narHash…)
        top = lib.intersectLists (lib.attrNames flake) [
          "checks"
          "darwinModules"
          "devShells"
          "formatter"
          "leafModule"
          "nixosModules"
          "overlays"
          "packages"
        ];
        nixosModules = lib.attrNames flake.nixosModules;
        darwinModules = lib.attrNames flake.darwinModules;
        overlays = lib.attrNames flake.overlays;
        packages = lib.mapAttrs (_: lib.attrNames) flake.packages;
        perSystem = map (o: lib.attrNames flake.${o}) [
          "checks"
          "devShells"
          "formatter"
        ];
      }
      {
        top = [
          "checks"
          "darwinModules"
          "devShells"
          "formatter"
          "leafModule"
          "nixosModules"
          "overlays"
          "packages"
        ];
        nixosModules = [
          "default"
          "policy-service"
        ];
        darwinModules = [
          "default"
          "nats"
          "policy-service"
        ];
        overlays = [ "default" ];
        packages = lib.genAttrs systems (_: [
          "default"
          "policy-service"
        ]);
        perSystem = [
          systems
          systems
          systems
        ];
      };
  "outputs: modules are this repository's files" =
    check.eq
      {
        leaf = toString flake.leafModule == toString repo + "/modules/leaf.nix";
        nixosDefault = flake.nixosModules.default == flake.nixosModules.policy-service;
        darwinDefault = flake.darwinModules.default == flake.darwinModules.policy-service;
      }
      {
        leaf = true;
        nixosDefault = true;
        darwinDefault = true;
      };
}
// lib.optionalAttrs standIn {
  "overlay: adds policy-service built from service/package.nix" =
    check.eq
      {
        inherit (overlaid.policy-service) pname version;
      }
      {
        pname = "policy-service";
        version = (lib.importJSON (repo + "/service/package.json")).version;
      };
  "devShell: nixpkgs' default nodejs (24) with nats-server and natscli; not refused" =
    check.eq
      {
        packages = map (p: p.name) devShell.packages;
        evaluates = (builtins.tryEval devShell.drvPath).success;
      }
      {
        packages = [
          "nodejs-24.13.0"
          "nats-server-2.14.9"
          "natscli-0.5.0"
          "jq-1.7.1"
        ];
        evaluates = true;
      };
  "packages: policy-service on every system evaluates (not refused)" = check.eq (lib.mapAttrs (
    _: p: (builtins.tryEval p.policy-service.drvPath).success
  ) withPkgs.packages) (lib.genAttrs systems (_: true));
}
