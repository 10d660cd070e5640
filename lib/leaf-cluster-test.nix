# The leaf cluster test as a runNixOSTest module: `leaves` NixOS VMs leaf1..leafN, each
# with leafModule, what the scenario needs (./leaf-cluster-base.nix) and the caller's own
# leaf modules, running tests/cluster/scenario.sh step by step.
# ./mk-leaf-cluster-test.nix hands it to pkgs.testers.runNixOSTest; the offline tests
# evaluate its nodes through the NixOS stand-in (tests/nix/cases/leaf-cluster-test.nix).
# Arguments: see mkLeafClusterTest in docs/nix.md.
{
  lib,
  leafModule,
  leafModules ? [ ],
  leaves ? 3,
  extraTestScript ? "",
  name ? "policy-service-cluster",
  # How the scenario's `nats` authenticates: { context; credsFile; nkeyFile; user;
  # passwordFile; caFile; certFile; keyFile; } (each optional; paths on the VMs).
  client ? { },
  # leaf number -> client URL; default `<tls|nats>://<host name>:<services.nats.port>`.
  leafUrl ? null,
  # Seconds each step waits for the cluster to converge.
  scenarioWait ? 120,
  # MiB per VM: node + nats-server + a replicated stream; the default 1024 is tight.
  memorySize ? 1536,
}:
let
  clientVariables = {
    context = "NATS_CONTEXT";
    credsFile = "NATS_CREDS";
    nkeyFile = "NATS_NKEY";
    user = "NATS_USER";
    # Read by the scenario into NATS_PASSWORD: the password is in no script and no argv.
    passwordFile = "SCENARIO_NATS_PASSWORD_FILE";
    caFile = "NATS_CA";
    certFile = "NATS_CERT";
    keyFile = "NATS_KEY";
  };
  unknownClientKeys = lib.attrNames (removeAttrs client (lib.attrNames clientVariables));
  leafNames = map (number: "leaf${toString number}") (lib.range 1 leaves);

  # The name other leaves reach a leaf by: its host name (and domain), which the test
  # framework puts in every VM's /etc/hosts.
  hostOf =
    config:
    config.networking.hostName
    + lib.optionalString ((config.networking.domain or null) != null) ".${config.networking.domain}";

  # The scenario's parameters, from the evaluated leaves (tests/cluster/scenario.sh).
  scenarioEnvironment =
    { config, nodes }:
    let
      perLeaf =
        number:
        let
          leafConfig = nodes."leaf${toString number}";
          nats = leafConfig.services.nats;
          host = hostOf leafConfig;
          monitor =
            if nats.settings ? https_port then
              "https://${host}:${toString nats.settings.https_port}"
            else if nats.settings ? http_port || nats.settings ? monitor_port then
              "http://${host}:${toString (nats.settings.http_port or nats.settings.monitor_port)}"
            else
              throw "mkLeafClusterTest: leaf${toString number} has no NATS monitoring port (services.nats.settings.http_port or https_port); the scenario reads /healthz and /jsz of every leaf";
          scheme = if nats.settings ? tls then "tls" else "nats";
        in
        {
          "LEAF${toString number}_URL" =
            if leafUrl != null then leafUrl number else "${scheme}://${host}:${toString nats.port}";
          "LEAF${toString number}_MONITOR" = monitor;
          "LEAF${toString number}_NAME" = nats.settings.server_name or nats.serverName;
        };
      service = nodes.leaf1.services.policy-service;
      httpsMonitor = nodes.leaf1.services.nats.settings ? https_port;
    in
    lib.foldl' (acc: number: acc // perLeaf number) { } (lib.range 1 leaves)
    // {
      LEAF_COUNT = toString leaves;
      STREAM_NAME = service.streamName;
      STREAM_REPLICAS = toString service.streamReplicas;
      SERVICE_USER = config.services.policy-service.user;
      SCENARIO_WAIT = toString scenarioWait;
    }
    // lib.mapAttrs' (key: value: lib.nameValuePair clientVariables.${key} "${value}") client
    // lib.optionalAttrs (httpsMonitor && client ? caFile) { CURL_CA_BUNDLE = "${client.caFile}"; };

  # VM-only parts, for every node: memory and the scenario as a command.
  vmDefaults =
    {
      config,
      nodes,
      pkgs,
      ...
    }:
    let
      environment = scenarioEnvironment { inherit config nodes; };
    in
    {
      virtualisation.memorySize = lib.mkDefault memorySize;
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
          # Defaults from the leaves' configuration; a variable set by the caller wins.
          # (Unquoted: an assignment is not split, and inside double quotes the single
          # quotes of escapeShellArg would stay literal.)
          text =
            lib.concatStrings (
              lib.mapAttrsToList (
                variable: value: "export ${variable}=\${${variable}-${lib.escapeShellArg value}}\n"
              ) environment
            )
            + builtins.readFile ../tests/cluster/scenario.sh;
        })
      ];
    };

  pythonList = names: "[${lib.concatStringsSep ", " names}]";
in
assert lib.assertMsg (builtins.isInt leaves && leaves >= 3 && leaves <= 5)
  "mkLeafClusterTest: leaves = ${toString leaves}; the scenario needs 3 to 5 leaves (a crashed leaf must leave a quorum, and JetStream keeps at most 5 replicas)";
assert lib.assertMsg (unknownClientKeys == [ ])
  "mkLeafClusterTest: unknown client attribute(s) ${lib.concatStringsSep ", " unknownClientKeys}; known: ${lib.concatStringsSep ", " (lib.attrNames clientVariables)}";
assert lib.assertMsg (builtins.isList leafModules)
  "mkLeafClusterTest: leafModules must be a list of NixOS modules";
{
  inherit name;

  nodes = lib.genAttrs leafNames (
    leafName:
    let
      number = lib.toInt (lib.removePrefix "leaf" leafName);
    in
    {
      imports = [
        leafModule
        (import ./leaf-cluster-base.nix {
          inherit hostOf;
          leaf = {
            inherit number leafNames;
            name = leafName;
            count = leaves;
          };
        })
      ]
      ++ leafModules;
    }
  );

  defaults = vmDefaults;

  # What the scenario is told on a node ({ config; nodes; } -> environment variables),
  # for inspection: `nix eval .#checks.x86_64-linux.cluster.scenarioEnvironment` needs
  # arguments, so see tests/nix/cases/leaf-cluster-test.nix for a use.
  passthru.scenarioEnvironment = scenarioEnvironment;

  # Steps of tests/cluster/scenario.sh, one subtest each; leaf1 is the one that crashes.
  testScript = ''
    leaves = ${pythonList leafNames}


    def scenario(machine, step):
        rc, out = machine.execute(f"cluster-scenario {step} 2>&1")
        print(out)
        if rc != 0:
            raise Exception(f"{machine.name}: cluster-scenario {step} failed (exit {rc})")


    def leaf_up(machine):
        machine.wait_for_unit("nats.service")
        machine.wait_for_unit("policy-service.service")


    start_all()

    with subtest("1 all units up; the JetStream meta cluster has a leader"):
        for leaf in leaves:
            leaf_up(leaf)
        scenario(leaf1, "step_cluster_up")

    with subtest("2 stream settings: events.policy.>, file, ~1 year, one replica per leaf"):
        scenario(leaf2, "step_stream_info")

    with subtest("3 the seed's nats req policy.commands.create is stored and received"):
        scenario(leaf1, "step_seed_create")

    with subtest("4 one policy-service instance per leaf via nats micro ls / $SRV.PING"):
        scenario(leaf3, "step_discovery")

    with subtest("5 lifecycle through different leaves"):
        scenario(leaf2, "step_lifecycle")

    with subtest("6 leaf1 crashes; the others keep serving; leaf1 restarts and catches up"):
        scenario(leaf2, "step_leader_to_leaf1")
        leaf1.crash()
        scenario(leaf2, "step_after_crash")
        leaf1.start()
        leaf_up(leaf1)
        scenario(leaf3, "step_caught_up")

    with subtest("7 hardening: exposure <= 2.0, own user, pino JSON in the journal"):
        for leaf in leaves:
            scenario(leaf, "step_unit_hardening")
  ''
  + lib.optionalString (extraTestScript != "") ''

    # extraTestScript (the caller's): `leaves`, `scenario(machine, step)` and
    # `leaf_up(machine)` are defined above.
    ${extraTestScript}
  '';
}
