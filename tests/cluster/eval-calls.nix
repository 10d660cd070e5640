# Both calls of lib.mkLeafClusterTest (../cluster.nix and ./tls-auth.nix) evaluated
# offline: the same call files, with the library's test module (lib/leaf-cluster-test.nix)
# in place of pkgs.testers.runNixOSTest and the stand-in package set, and every node
# through the NixOS stand-in evaluation (../nix/lib/eval-nixos.nix), with `nodes` as the
# test framework passes it.
#   import ./eval-calls.nix { lib; repo; }
#     -> { cluster = { test; nodes; vmNodes; scenarioCommand; runtime; }; tls-auth = …; }
# test     the test module (name, nodes, defaults, testScript)
# nodes    leaf name -> evaluated config of the node (the caller's and our modules)
# vmNodes  the same plus the VM defaults (memory, the scenario command and its environment)
# scenarioCommand  leaf name -> the cluster-scenario package's arguments (name, text, …)
# runtime  leaf name -> ../nix/lib/node-runtime.nix's view (NATS settings, unit environment)
{
  lib,
  repo ? ../..,
}:
let
  standInPkgs = import (repo + "/tests/nix/lib/stand-in-pkgs.nix") { inherit lib; };
  fake = name: standInPkgs.writeText name "";
  # What the test's own files use beyond the stand-in package set.
  pkgs = standInPkgs // {
    writeShellApplication = standInPkgs.writeTextFile;
    curl = fake "curl";
    gawk = fake "gawk";
    procps = fake "procps";
    openssl = fake "openssl";
  };
  leafModule = repo + "/modules/leaf.nix";
  mkLeafClusterTest =
    args:
    import (repo + "/lib/leaf-cluster-test.nix") (
      removeAttrs args [ "pkgs" ]
      // {
        inherit lib leafModule;
      }
    );
  evalCall = callFile: evalTest (import callFile { inherit pkgs mkLeafClusterTest; });
  # Also for the cases' own calls (tests/nix/cases/leaf-cluster-test.nix).
  evalTest =
    test:
    let
      modulesOf = name: [
        (repo + "/tests/cluster/nixos-test-stand-in.nix")
        test.nodes.${name}
        { _module.args.nodes = nodes; }
      ];
      nodes = lib.mapAttrs (
        name: _:
        import (repo + "/tests/nix/lib/eval-nixos.nix") {
          inherit lib pkgs;
          modules = modulesOf name;
        }
      ) test.nodes;
    in
    rec {
      inherit test nodes;
      vmNodes = lib.mapAttrs (
        name: _:
        import (repo + "/tests/nix/lib/eval-nixos.nix") {
          inherit lib pkgs;
          modules = modulesOf name ++ [ test.defaults ];
        }
      ) test.nodes;
      # The scenario command of a node as writeShellApplication receives it.
      scenarioCommand =
        name:
        lib.findFirst (
          package: (package.name or "") == "cluster-scenario"
        ) (throw "no cluster-scenario on ${name}") vmNodes.${name}.environment.systemPackages;
      runtime = lib.mapAttrs (
        name: _:
        import (repo + "/tests/nix/lib/node-runtime.nix") {
          inherit lib pkgs;
          modules = modulesOf name;
        }
      ) test.nodes;
    };
in
{
  inherit pkgs mkLeafClusterTest evalTest;
  cluster = evalCall (repo + "/tests/cluster.nix");
  tls-auth = evalCall (repo + "/tests/cluster/tls-auth.nix");
}
