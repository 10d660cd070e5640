# NixOS implementation of services.policy-service: a hardened systemd unit.
{
  config,
  options,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.policy-service;
  runtime = import ./environment.nix {
    inherit lib cfg;
    # LoadCredential puts each file in $CREDENTIALS_DIRECTORY; the service expands this
    # literal prefix itself (systemd does not expand `$` in Environment=).
    secretPath = name: _file: "$CREDENTIALS_DIRECTORY/${name}";
  };
  # The local NATS server, when this machine runs one through services.nats.
  localNats = config.services.nats.enable or false;
  stateDirectory = "policy-service";
  nats = config.services.nats;
  clusterRoutes = nats.settings.cluster.routes or [ ];
  # networking.hostName at NixOS' own default ("nixos", set on every machine that names none).
  hostNameUnset = options.networking.hostName.highestPrio >= (lib.mkOptionDefault null).priority;
  # Files the NATS configuration names outside the store: unreadable where validateConfig runs.
  natsFilesOutsideStore = import ./nats-build-files.nix {
    inherit lib;
    inherit (nats) settings;
  };
  # A server name every leaf would share: nixpkgs' constant default, or the host name default.
  sharedServerName =
    nats.serverName == "nats" || (nats.serverName == config.networking.hostName && hostNameUnset);
in
{
  _class = "nixos";

  imports = [
    ./options.nix
    ./nixos-options.nix
    # The seed documents services.nats.serverConfig; nixpkgs calls it settings.
    (lib.mkAliasOptionModule
      [
        "services"
        "nats"
        "serverConfig"
      ]
      [
        "services"
        "nats"
        "settings"
      ]
    )
  ];

  config = lib.mkIf cfg.enable {
    systemd.services.policy-service = {
      description = "Policy service (event-sourced policy management on NATS JetStream)";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ] ++ lib.optional localNats "nats.service";
      after = [ "network-online.target" ] ++ lib.optional localNats "nats.service";
      environment = runtime.environment;
      # At most 5 failed starts in 5 minutes, then systemd gives up until an operator acts.
      startLimitIntervalSec = 300;
      startLimitBurst = 5;

      serviceConfig = {
        Type = "exec";
        ExecStartPre = "${lib.getExe cfg.package} --check-config";
        ExecStart = lib.getExe cfg.package;
        Restart = "on-failure";
        RestartSec = 5;
        User = cfg.user;
        Group = cfg.group;
        StateDirectory = stateDirectory;
        StateDirectoryMode = "0700";
        WorkingDirectory = "/var/lib/${stateDirectory}";
        LoadCredential = lib.mapAttrsToList (name: file: "${name}:${file}") runtime.secrets;
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;

        # Hardening. No MemoryDenyWriteExecute: V8's JIT needs writable executable memory.
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        NoNewPrivileges = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateUsers = true;
        PrivateMounts = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        ProtectClock = true;
        ProtectHostname = true;
        ProtectControlGroups = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectKernelTunables = true;
        RestrictAddressFamilies = [
          "AF_INET"
          "AF_INET6"
          "AF_UNIX"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        RemoveIPC = true;
        LockPersonality = true;
        DevicePolicy = "closed";
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
          "~@resources"
        ];
        # Node raises its own file-descriptor limit at start (setrlimit, in @resources):
        # refuse it with EPERM, which Node tolerates, instead of killing the process.
        SystemCallErrorNumber = "EPERM";
        UMask = "0077";
      };
    };

    # JetStream clustering needs a unique server name per node; nixpkgs' default is the
    # same "nats" everywhere, and the seed's multi-leaf example sets none. An explicit
    # services.nats.serverName still wins.
    services.nats.serverName = lib.mkIf localNats (lib.mkDefault config.networking.hostName);
    # nixpkgs validates nats.conf with `nats-server -t` inside the build sandbox; a TLS
    # certificate or key outside the store is not there, so the build would fail (the guide's
    # TLS example among them). Validation stays on for configurations it can check; an
    # explicit services.nats.validateConfig still wins.
    services.nats.validateConfig = lib.mkIf (localNats && natsFilesOutsideStore != [ ]) (
      lib.mkDefault false
    );

    # `policy-service ctl status` for operators. The credential files are the configured
    # originals (the unit gets copies through LoadCredential), usually readable by root only:
    # `sudo policy-service ctl status`.
    environment.systemPackages = [
      (import ./operator-command.nix {
        inherit lib pkgs cfg;
        environment = runtime.operatorEnvironment;
        runsAs = "the systemd unit policy-service.service (systemctl status policy-service)";
      })
    ];

    # JetStream clustering needs a unique server_name per node; with a shared one it breaks
    # without a clear message from NATS.
    assertions = lib.optional (localNats && clusterRoutes != [ ]) {
      assertion = !sharedServerName;
      message = ''services.nats has cluster routes but its server name is "${nats.serverName}", a default every leaf shares${lib.optionalString hostNameUnset " (networking.hostName is not set)"}: JetStream clustering needs a unique name per node. Set networking.hostName (services.nats.serverName follows it) or services.nats.serverName to a name unique to this leaf.'';
    };

    users.users = lib.mkIf (cfg.user == "policy-service") {
      policy-service = {
        isSystemUser = true;
        group = cfg.group;
        description = "Policy service daemon user";
      };
    };
    users.groups = lib.mkIf (cfg.group == "policy-service") { policy-service = { }; };
  };
}
