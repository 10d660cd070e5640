# checks.<linux>.cluster: the library's cluster test (lib.mkLeafClusterTest,
# lib/leaf-cluster-test.nix) on our own example leaves (./cluster/nodes.nix): three NixOS
# VMs running tests/cluster/scenario.sh, which tests/cluster/run-local also runs against
# real processes on loopback. Needs KVM; cannot be built on our development machines.
{ pkgs, mkLeafClusterTest }:
mkLeafClusterTest {
  inherit pkgs;
  name = "policy-service-cluster";
  leafModules = [ ./cluster/nodes.nix ];
  # Our leaves also carry the guide's system account (nodes.nix), so the guide's
  # troubleshooting commands are part of our own run.
  extraTestScript = ''
    with subtest("8 the guide's nats server ping / server info, with the system account"):
        rc, out = leaf2.execute("SYS_NKEY=/etc/policy-cluster-test/system-user.nk cluster-scenario step_server_info 2>&1")
        print(out)
        if rc != 0:
            raise Exception(f"leaf2: cluster-scenario step_server_info failed (exit {rc})")
  '';
}
