# checks.<linux>.cluster: the library's cluster test (lib.mkLeafClusterTest,
# lib/leaf-cluster-test.nix) on our own example leaves (./cluster/nodes.nix): three NixOS
# VMs running tests/cluster/scenario.sh, which tests/cluster/run-local also runs against
# real processes on loopback. Needs KVM; cannot be built on our development machines.
{ pkgs, mkLeafClusterTest }:
mkLeafClusterTest {
  inherit pkgs;
  name = "policy-service-cluster";
  leafModules = [ ./cluster/nodes.nix ];
}
