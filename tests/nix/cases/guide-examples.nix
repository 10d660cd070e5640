# Every ```nix block of docs/leaf-node-deployment.md (the corrected deployment guide), read from
# the guide itself at evaluation time and evaluated as written: flake examples through their own
# `outputs` with our flake as `cim-domain-policy`, the direct import through
# deployment/nix/leaf.nix, `inputs.…` lines as a flake fragment, everything else as a module body
# next to leafModule. (The seed guide's blocks are checked by ./seed-examples.nix.)
{
  lib,
  repo,
  flake,
  nixosSystem,
  darwinSystem,
  check,
  flakeExampleOutputs,
  directImportExample,
  moduleBodyExample,
  examples,
  ...
}:
let
  guidePath = repo + "/docs/leaf-node-deployment.md";
  guide = builtins.readFile guidePath;
  # Text between fences: every other piece of the split.
  pieces = lib.filter builtins.isString (builtins.split "```" guide);
  fenced = lib.imap0 (i: p: { inherit i p; }) pieces;
  insideFences = map (x: x.p) (lib.filter (x: lib.mod x.i 2 == 1) fenced);
  blocks = map (lib.removePrefix "nix\n") (lib.filter (lib.hasPrefix "nix\n") insideFences);

  # The flake examples import ./hardware-configuration.nix; the seed examples ship one.
  hardware = toString examples + "/hardware-configuration.nix";
  fileOf =
    n: text:
    builtins.toFile "guide-block-${toString n}.nix" (
      builtins.replaceStrings [ "./hardware-configuration.nix" ] [ hardware ] text
    );

  kindOf =
    text:
    if lib.hasInfix "outputs =" text then
      "flake"
    else if lib.hasInfix "builtins.fetchGit" text then
      "direct-import"
    else if lib.hasPrefix "inputs." text then
      "flake-fragment"
    else
      "module-body";

  flakeOutputs = file: flakeExampleOutputs file { };
  directImport = directImportExample;
  moduleBody = moduleBodyExample;
  nixos = modules: (nixosSystem { inherit modules; }).config;
  darwin = modules: (darwinSystem { inherit modules; }).config;

  # A configuration is fine when it evaluates fully, its assertions hold and it has no
  # policy-service warning.
  healthy =
    config: extra:
    let
      failed = check.failedAssertions config;
      warned = lib.filter (lib.hasInfix "policy-service") config.warnings;
    in
    builtins.deepSeq extra (failed == [ ] && warned == [ ]);
  nixosHealthy = config: healthy config config.systemd.services.policy-service.environment;
  darwinHealthy =
    config: healthy config config.launchd.daemons.policy-service.serviceConfig.EnvironmentVariables;
  noDarwin = {
    skip = "no nix-darwin evaluation here (offline: set POLICY_SERVICE_NIX_DARWIN; flake checks: darwin systems only)";
  };

  caseOf =
    n: text:
    let
      file = fileOf n text;
      kind = kindOf text;
      label = "block ${toString n} (${kind})";
    in
    if kind == "flake" then
      let
        out = flakeOutputs file;
        nixosCases = lib.mapAttrs' (
          name: system:
          lib.nameValuePair "${label}: nixosConfigurations.${name}" (
            check.isTrue (nixosHealthy system.config) "failed assertions or warnings"
          )
        ) (out.nixosConfigurations or { });
        darwinCases = lib.mapAttrs' (
          name: system:
          lib.nameValuePair "${label}: darwinConfigurations.${name}" (
            if darwinSystem == null then
              noDarwin
            else
              check.isTrue (darwinHealthy system.config) "failed assertions or warnings"
          )
        ) (out.darwinConfigurations or { });
      in
      nixosCases // darwinCases
    else if kind == "direct-import" then
      {
        "${label}: NixOS" = check.isTrue (nixosHealthy (nixos [
          (directImport file)
        ])) "failed assertions or warnings";
        "${label}: nix-darwin" =
          if darwinSystem == null then
            noDarwin
          else
            check.isTrue (darwinHealthy (darwin [ (directImport file) ])) "failed assertions or warnings";
      }
    else if kind == "flake-fragment" then
      {
        "${label}: pins a tag of the flake" =
          check.isTrue (lib.hasPrefix "github:thecowboyai/cim-domain-policy/v" (moduleBody file).inputs.cim-domain-policy.url) "not a tag pin";
      }
    else
      {
        "${label}: NixOS module body next to leafModule" = check.isTrue (nixosHealthy (nixos [
          flake.leafModule
          { services.policy-service.enable = lib.mkDefault true; }
          (moduleBody file)
        ])) "failed assertions or warnings";
      };

  perBlock = lib.foldl' (acc: c: acc // c) { } (lib.imap1 caseOf blocks);

  # The corrections the guide teaches, checked on its multi-leaf block (the one with leaf-1).
  multiLeaf = lib.findFirst (
    b: lib.hasInfix ''serverName = "leaf-1"'' b && lib.hasInfix "streamReplicas = 3" b
  ) null blocks;
  leaf1 = nixos [
    flake.leafModule
    (moduleBody (fileOf 0 multiLeaf))
  ];
in
perBlock
// {
  "the guide has nix blocks of every kind" =
    check.eq (lib.unique (lib.sort lib.lessThan (map kindOf blocks)))
      [
        "direct-import"
        "flake"
        "flake-fragment"
        "module-body"
      ];
  "multi-leaf block: cluster port, unique server name, sync always, three replicas" =
    if multiLeaf == null then
      check.isTrue false "no block with serverName = \"leaf-1\" and streamReplicas = 3"
    else
      check.eq
        {
          inherit (leaf1.services.nats.settings) server_name;
          cluster_port = leaf1.services.nats.settings.cluster.port;
          sync = leaf1.services.nats.settings.jetstream.sync_interval;
          replicas = leaf1.systemd.services.policy-service.environment.STREAM_REPLICAS;
        }
        {
          server_name = "leaf-1";
          cluster_port = 6222;
          sync = "always";
          replicas = "3";
        };
}
