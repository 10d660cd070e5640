# What every evaluation case (../cases/*.nix) receives, offline or as a flake check:
#   lib, repo (the repository root), flake (our flake's outputs), check (./check.nix),
#   nixosSystem / darwinSystem ({ system?, modules } -> { config; }, as nixpkgs.lib.nixosSystem
#   and nix-darwin.lib.darwinSystem; darwinSystem is null when nix-darwin is unavailable),
#   standIn (true when packages are ./stand-in-pkgs.nix fakes), examples (../examples),
#   defaultEnvironment, and the guide-example evaluators (flakeExampleOutputs, directImportExample,
#   moduleBodyExample).
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
  # How the deployment guides' nix blocks are evaluated (../cases/{seed,guide}-examples.nix):
  # a flake example's `outputs` gets the inputs it names, with our flake as `cim-domain-policy`
  # (`scope` binds names an example uses without declaring, e.g. the TL;DR's `darwin`).
  flakeExampleOutputs =
    file: scope:
    let
      outputs = (scopedImport scope file).outputs;
      inputs = {
        self = { };
        nixpkgs.lib = lib // {
          inherit nixosSystem;
        };
        darwin.lib = {
          inherit darwinSystem;
        };
        cim-domain-policy = flake;
      };
    in
    outputs (builtins.intersectAttrs (lib.functionArgs outputs) inputs);
  # A direct import: `builtins.fetchGit { url = "…/cim-domain-policy"; … }` stands for this repository.
  directImportExample =
    file:
    scopedImport {
      builtins = builtins // {
        fetchGit = _: { outPath = toString repo; };
      };
    } file;
  # A snippet `a.b = …;` is a module body.
  moduleBodyExample =
    file: import (builtins.toFile "module-body.nix" "{\n${builtins.readFile file}\n}");
  # The operator command services.policy-service puts on the system PATH (an
  # environment.systemPackages entry named policy-service), as { text; exports; }:
  # exports are the variables its `export NAME=value` lines set (values unquoted).
  operatorCommandOf =
    config:
    let
      command = lib.findFirst (
        p: (p.name or "") == "policy-service"
      ) null config.environment.systemPackages;
      unquote =
        v:
        if lib.hasPrefix "'" v then
          lib.replaceStrings [ "'\\''" ] [ "'" ] (lib.removePrefix "'" (lib.removeSuffix "'" v))
        else
          v;
      exportLine = builtins.match "export ([A-Za-z_][A-Za-z0-9_]*)=(.*)";
      exports = lib.listToAttrs (
        map (m: lib.nameValuePair (lib.elemAt m 0) (unquote (lib.elemAt m 1))) (
          lib.filter (m: m != null) (map exportLine (lib.splitString "\n" command.text))
        )
      );
    in
    if command == null then
      null
    else
      {
        inherit (command) text;
        inherit exports;
      };
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
    HEAP_GROWING_PERCENT = "30";
    NODE_OPTIONS = "--max-semi-space-size=8";
    NODE_ENV = "production";
    READ_MODEL_CHECKPOINT = "/var/lib/policy-service/read-model.checkpoint";
    READ_MODEL_CHECKPOINT_INTERVAL_S = "300";
  };
}
