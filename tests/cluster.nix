# The three-node cluster test as a NixOS VM test (users' CI; cannot be built here).
# Use with: pkgs.testers.runNixOSTest ./tests/cluster.nix
# Each step of the scenario is tests/cluster/scenario.sh, installed on every node as
# `cluster-scenario`; tests/cluster/run-local types the very same steps against real
# processes on loopback.
let
  cluster = import ./cluster/nodes.nix;
in
{
  name = "policy-service-cluster";

  nodes = cluster.nodes;

  defaults =
    { pkgs, ... }:
    {
      # node + nats-server + an R3 stream; the default 1 GiB is tight.
      virtualisation.memorySize = 1536;
      # The system user's seed for step_server_info: a test-only key (nodes.nix has its public key).
      environment.etc."policy-cluster-test/system-user.nk" = {
        source = ./cluster/system-user.test.nk;
        mode = "0400";
      };
      environment.systemPackages = [
        (pkgs.writeShellApplication {
          name = "cluster-scenario";
          runtimeInputs = [
            pkgs.natscli
            pkgs.jq
            pkgs.curl
            pkgs.coreutils
            pkgs.gawk
            pkgs.gnugrep
            pkgs.gnused
            pkgs.procps
          ];
          # The script's own file-wide `shellcheck disable` stops being file-wide once
          # writeShellApplication prepends its header, so repeat it here: helpers are partly
          # invoked indirectly (`eventually … "$@"`, SC2317/SC2329) and `$x` in single quotes
          # are jq variables (SC2016).
          excludeShellChecks = [
            "SC2016"
            "SC2317"
            "SC2329"
          ];
          text = builtins.readFile ./cluster/scenario.sh;
        })
      ];
    };

  # The scenario waits up to SCENARIO_WAIT seconds for the cluster to converge in each step.
  testScript = ''
    leaves = [leaf1, leaf2, leaf3]


    def scenario(machine, step):
        rc, out = machine.execute(f"SCENARIO_WAIT=120 cluster-scenario {step} 2>&1")
        print(out)
        if rc != 0:
            raise Exception(f"{machine.name}: cluster-scenario {step} failed (exit {rc})")


    def leaf_up(machine):
        machine.wait_for_unit("nats.service")
        machine.wait_for_open_port(4222)
        machine.wait_for_unit("policy-service.service")


    start_all()

    with subtest("1 all units up; the JetStream meta cluster has a leader"):
        for leaf in leaves:
            leaf_up(leaf)
        scenario(leaf1, "step_cluster_up")

    with subtest("2 stream POLICY_EVENTS: events.policy.>, file, ~1 year, 3 replicas"):
        scenario(leaf2, "step_stream_info")

    with subtest("3 the seed's nats req policy.commands.create is stored and received"):
        scenario(leaf1, "step_seed_create")

    with subtest("4 three policy-service instances via nats micro ls / $SRV.PING"):
        scenario(leaf3, "step_discovery")

    with subtest("4b the guide's nats server ping / server info, with the system account"):
        rc, out = leaf2.execute("SCENARIO_WAIT=120 SYS_NKEY=/etc/policy-cluster-test/system-user.nk cluster-scenario step_server_info 2>&1")
        print(out)
        if rc != 0:
            raise Exception(f"leaf2: cluster-scenario step_server_info failed (exit {rc})")

    with subtest("5 lifecycle through different leaves"):
        scenario(leaf2, "step_lifecycle")

    with subtest("6 leaf1 crashes; leaf2/leaf3 keep serving; leaf1 restarts and catches up"):
        scenario(leaf2, "step_leader_to_leaf1")
        leaf1.crash()
        scenario(leaf2, "step_after_crash")
        leaf1.start()
        leaf_up(leaf1)
        scenario(leaf3, "step_caught_up")

    with subtest("7 hardening: exposure <= 2.0, own user, pino JSON in the journal"):
        for leaf in leaves:
            scenario(leaf, "step_unit_hardening")
  '';
}
