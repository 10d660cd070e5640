# What every evaluation case (../cases/*.nix) receives, offline or as a flake check:
#   lib, repo (the repository root), flake (our flake's outputs), check (./check.nix),
#   nixosSystem / darwinSystem ({ system?, modules } -> { config; }, as nixpkgs.lib.nixosSystem
#   and nix-darwin.lib.darwinSystem; darwinSystem is null when nix-darwin is unavailable),
#   standIn (true when packages are ./stand-in-pkgs.nix fakes), examples (../examples).
# Offline (tests/nix/run-offline) both systems come from the stand-in evaluations below;
# the flake checks (checks/default.nix) pass the real ones.
{
  lib,
  repo,
  flake ? import ./offline-flake.nix { inherit lib repo; },
  nixDarwin ? null,
  nixosSystem ? args: {
    config = import ./eval-nixos.nix {
      inherit lib;
      inherit (args) modules;
    };
  },
  darwinSystem ?
    if nixDarwin == null then
      null
    else
      args: {
        config = import ./eval-darwin.nix {
          inherit lib nixDarwin;
          inherit (args) modules;
          system = args.system or "aarch64-darwin";
        };
      },
  standIn ? true,
}:
{
  inherit
    lib
    repo
    flake
    nixosSystem
    darwinSystem
    standIn
    ;
  check = import ./check.nix { inherit lib; };
  examples = repo + "/tests/nix/examples";
  # The service's environment with every option at its default: the same on NixOS and nix-darwin.
  defaultEnvironment = {
    NATS_URL = "nats://localhost:4222";
    STREAM_NAME = "POLICY_EVENTS";
    LOG_LEVEL = "info";
    SNAPSHOT_FREQUENCY = "100";
    STREAM_REPLICAS = "1";
    DUPLICATE_WINDOW = "120";
    AUDIT_ENABLED = "true";
    AUDIT_STREAM_NAME = "POLICY_AUDIT";
    AUDIT_MAX_AGE_DAYS = "90";
    NODE_ENV = "production";
  };
}
