# lib.mkLeafClusterTest: the cluster test of this repository, run on the caller's own
# leaves. Returns a pkgs.testers.runNixOSTest derivation (Linux with KVM, or a darwin host
# with a Linux builder); put it in your flake's checks. See docs/nix.md.
#
#   cim-domain-policy.lib.mkLeafClusterTest {
#     pkgs;                    # nixpkgs for the test (its runNixOSTest and the VMs' packages)
#     leafModules ? [ ];       # your NixOS leaf modules: services.nats settings, TLS,
#                              #   authentication, firewall, host names; `{ leaf, ... }:`
#                              #   gives { number; name; leafNames; count; }
#     leaves ? 3;              # 3 to 5 VMs, leaf1..leafN
#     extraTestScript ? "";    # Python appended to the test script
#     client ? { };            # credentials of the scenario's `nats`: context, credsFile,
#                              #   nkeyFile, user + passwordFile, caFile, certFile, keyFile
#     leafUrl ? null;          # leaf number -> client URL (default from the configuration)
#     name, scenarioWait, memorySize;
#   }
{ leafModule }:
{ pkgs, ... }@args:
pkgs.testers.runNixOSTest (
  import ./leaf-cluster-test.nix (
    removeAttrs args [ "pkgs" ]
    // {
      inherit (pkgs) lib;
      inherit leafModule;
    }
  )
)
