# The NixOS side: the unit, environment, user and hardening generated for
# services.policy-service, through each entry point (leafModule, nixosModules.default,
# deployment/nix/leaf.nix), and refusal of bad values.
{
  lib,
  repo,
  flake,
  nixosSystem,
  check,
  defaultEnvironment,
  operatorCommandOf,
  ...
}:
let
  eval = modules: (nixosSystem { inherit modules; }).config;
  enabled = {
    services.policy-service.enable = true;
  };
  entryPoints = {
    leafModule = flake.leafModule;
    nixosModules-default = flake.nixosModules.default;
    deployment-leaf = repo + "/deployment/nix/leaf.nix";
  };
  unitOf = config: config.systemd.services.policy-service;
  basic = eval [
    flake.leafModule
    enabled
  ];
  unit = unitOf basic;
  sc = unit.serviceConfig;
  package = basic.services.policy-service.package;
  exe = "${package}/bin/policy-service";

  withNats = eval [
    flake.leafModule
    enabled
    {
      networking.hostName = "leaf-1";
      services.nats = {
        enable = true;
        jetstream = true;
      };
    }
  ];
  secrets = eval [
    flake.leafModule
    {
      services.policy-service = {
        enable = true;
        natsUrl = "tls://localhost:4222";
        credentialsFile = "/run/secrets/policy.creds";
        tls = {
          caFile = "/etc/ssl/nats/ca.pem";
          certFile = "/etc/ssl/nats/client.pem";
          keyFile = "/run/secrets/client-key.pem";
        };
        environmentFile = "/run/secrets/policy.env";
      };
    }
  ];
  custom = eval [
    flake.leafModule
    {
      services.policy-service = {
        enable = true;
        user = "policy";
        group = "policy";
        natsUrl = "nats://10.0.0.5:4222";
        streamName = "POLICY_EVENTS_TEST";
        logLevel = "debug";
        snapshotFrequency = 500;
        streamReplicas = 3;
        duplicateWindow = 600;
        audit = {
          enable = false;
          streamName = "AUDIT_X";
          maxAgeDays = 30;
        };
        heap = {
          nodeOptions = "--max-semi-space-size=32";
          growingPercent = 100;
        };
      };
      users.users.policy = {
        isSystemUser = true;
        group = "policy";
      };
      users.groups.policy = { };
    }
  ];
  withSetting =
    settings:
    eval [
      flake.leafModule
      {
        services.policy-service = {
          enable = true;
        }
        // settings;
      }
    ];
  envOf = settings: (unitOf (withSetting settings)).environment;
  # A clustered leaf: NATS with routes, plus `extra`.
  clustered =
    extra:
    eval [
      flake.leafModule
      enabled
      {
        services.nats = {
          enable = true;
          jetstream = true;
          settings.cluster = {
            name = "policy";
            port = 6222;
            routes = [
              "nats://leaf-1:6222"
              "nats://leaf-2:6222"
            ];
          };
        };
      }
      extra
    ];
  serverNameFailures =
    config:
    lib.filter (lib.hasInfix "JetStream clustering needs a unique name") (
      check.failedAssertions config
    );
  withSecretFiles = withSetting {
    natsUser = "svc";
    passwordFile = "/run/secrets/nats-password";
    tls = {
      caFile = "/etc/nats/ca.pem";
      certFile = "/etc/nats/client.pem";
      keyFile = "/run/secrets/client-key.pem";
    };
    environmentFile = "/run/secrets/policy-service.env";
  };
in
lib.mapAttrs' (
  name: module:
  lib.nameValuePair "entry point ${name} yields policy-service.service" (
    check.isTrue (
      (eval [
        module
        enabled
      ]).systemd.services
        ? policy-service
    ) "no systemd.services.policy-service"
  )
) entryPoints
// {
  "disabled by default: no unit, no user" =
    let
      config = eval [ flake.leafModule ];
    in
    check.eq
      {
        unit = config.systemd.services ? policy-service;
        user = config.users.users ? policy-service;
        group = config.users.groups ? policy-service;
      }
      {
        unit = false;
        user = false;
        group = false;
      };
  # (NixOS itself adds PATH/LOCALE_ARCHIVE/TZDIR to every unit.)
  "environment: seed defaults for every variable the service reads" = check.eq (removeAttrs
    unit.environment
    [
      "PATH"
      "LOCALE_ARCHIVE"
      "TZDIR"
    ]
  ) defaultEnvironment;
  "environment: every option reaches its variable" = check.hasAll (unitOf custom).environment {
    NATS_URL = "nats://10.0.0.5:4222";
    STREAM_NAME = "POLICY_EVENTS_TEST";
    LOG_LEVEL = "debug";
    SNAPSHOT_FREQUENCY = "500";
    STREAM_REPLICAS = "3";
    DUPLICATE_WINDOW = "600";
    AUDIT_ENABLED = "false";
    AUDIT_STREAM_NAME = "AUDIT_X";
    AUDIT_MAX_AGE_DAYS = "30";
    HEAP_GROWING_PERCENT = "100";
    NODE_OPTIONS = "--max-semi-space-size=32";
  };
  "unit: ordering, start and restart policy" = check.hasAll (unit // sc) {
    wantedBy = [ "multi-user.target" ];
    after = [ "network-online.target" ];
    wants = [ "network-online.target" ];
    startLimitIntervalSec = 300;
    startLimitBurst = 5;
    Type = "exec";
    ExecStart = exe;
    ExecStartPre = "${exe} --check-config";
    Restart = "on-failure";
    RestartSec = 5;
    User = "policy-service";
    Group = "policy-service";
    StateDirectory = "policy-service";
    WorkingDirectory = "/var/lib/policy-service";
  };
  "unit: after and wants nats.service when the local NATS is enabled" =
    check.hasAll (unitOf withNats)
      {
        after = [
          "network-online.target"
          "nats.service"
        ];
        wants = [
          "network-online.target"
          "nats.service"
        ];
      };
  "local NATS gets the host name as its unique server_name" =
    check.eq withNats.services.nats.settings.server_name "leaf-1";
  "unit: hardening set" = check.hasAll sc {
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
    SystemCallErrorNumber = "EPERM";
    UMask = "0077";
  };
  "unit: no MemoryDenyWriteExecute (breaks V8's JIT)" = check.isTrue (
    !(sc.MemoryDenyWriteExecute or false)
  ) "MemoryDenyWriteExecute is set";
  "unit: no secrets, no credentials, no environment file by default" =
    check.eq
      {
        LoadCredential = sc.LoadCredential or [ ];
        EnvironmentFile = sc.EnvironmentFile or [ ];
      }
      {
        LoadCredential = [ ];
        EnvironmentFile = [ ];
      };
  "user and group: static system user policy-service" =
    check.eq
      {
        user = {
          inherit (basic.users.users.policy-service) isSystemUser group;
        };
        group = basic.users.groups ? policy-service;
      }
      {
        user = {
          isSystemUser = true;
          group = "policy-service";
        };
        group = true;
      };
  "user and group: a custom user is used, not created" =
    check.eq
      {
        created = custom.users.users ? policy-service || custom.users.groups ? policy-service;
        inherit ((unitOf custom).serviceConfig) User Group;
      }
      {
        created = false;
        User = "policy";
        Group = "policy";
      };
  "assertions hold for the default and custom configurations" = check.noFailedAssertions (
    basic // { assertions = basic.assertions ++ custom.assertions ++ withNats.assertions; }
  );
  "secrets: LoadCredential from the configured paths" =
    check.eq (unitOf secrets).serviceConfig.LoadCredential
      [
        "nats-ca:/etc/ssl/nats/ca.pem"
        "nats-cert:/etc/ssl/nats/client.pem"
        "nats-creds:/run/secrets/policy.creds"
        "nats-key:/run/secrets/client-key.pem"
      ];
  "secrets: environment points into $CREDENTIALS_DIRECTORY" =
    check.hasAll (unitOf secrets).environment
      {
        NATS_URL = "tls://localhost:4222";
        NATS_CREDS_FILE = "\$CREDENTIALS_DIRECTORY/nats-creds";
        NATS_CA_FILE = "\$CREDENTIALS_DIRECTORY/nats-ca";
        NATS_CERT_FILE = "\$CREDENTIALS_DIRECTORY/nats-cert";
        NATS_KEY_FILE = "\$CREDENTIALS_DIRECTORY/nats-key";
      };
  "secrets: environmentFile becomes EnvironmentFile" =
    check.eq (unitOf secrets).serviceConfig.EnvironmentFile
      [
        "/run/secrets/policy.env"
      ];
  "secrets: user/password and token variables" =
    check.hasAll
      (envOf {
        natsUser = "svc";
        passwordFile = "/run/secrets/pw";
      })
      {
        NATS_USER = "svc";
        NATS_PASSWORD_FILE = "\$CREDENTIALS_DIRECTORY/nats-password";
      };
  # The refusals below are meaningful because these neighbouring values evaluate.
  "accepted: boundary values next to the refused ones" = check.accepted (
    map envOf [
      { snapshotFrequency = 1; }
      { logLevel = "trace"; }
      { natsUrl = "tls://nats.internal:4222,tls://nats2.internal:4222"; }
      { streamName = "POLICY_EVENTS-2"; }
      { duplicateWindow = 120; }
      { duplicateWindow = 604800; }
      { streamName = lib.concatStrings (lib.genList (_: "A") 64); }
      { credentialsFile = "/run/secrets/policy.creds"; }
      { tokenFile = "/var/lib/secrets/token"; }
    ]
  );
  "readModelCheckpoint: in the state directory by default, another path, null turns it off" =
    check.eq
      [
        (envOf { }).READ_MODEL_CHECKPOINT
        (envOf { readModelCheckpoint = "/var/lib/policy-service/rm.ckpt"; }).READ_MODEL_CHECKPOINT
        ((envOf { readModelCheckpoint = null; }) ? READ_MODEL_CHECKPOINT)
        sc.StateDirectoryMode
      ]
      [
        "/var/lib/policy-service/read-model.checkpoint"
        "/var/lib/policy-service/rm.ckpt"
        false
        "0700"
      ];
  "readModelCheckpoint through deployment/nix/leaf.nix (non-flake): the same default" =
    check.eq
      (unitOf (eval [
        entryPoints.deployment-leaf
        enabled
      ])).environment.READ_MODEL_CHECKPOINT
      "/var/lib/policy-service/read-model.checkpoint";
  "readModelCheckpointInterval: 300 s by default, another value, not passed when the checkpoint is off" =
    check.eq
      [
        (envOf { }).READ_MODEL_CHECKPOINT_INTERVAL_S
        (envOf { readModelCheckpointInterval = 60; }).READ_MODEL_CHECKPOINT_INTERVAL_S
        (
          (envOf {
            readModelCheckpoint = null;
            readModelCheckpointInterval = 60;
          })
            ? READ_MODEL_CHECKPOINT_INTERVAL_S
        )
      ]
      [
        "300"
        "60"
        false
      ];
  "accepted: readModelCheckpointInterval at its bounds (1 and 86400)" = check.accepted (
    map envOf [
      { readModelCheckpointInterval = 1; }
      { readModelCheckpointInterval = 86400; }
    ]
  );
  "refused: readModelCheckpointInterval = 0" = check.refused (envOf {
    readModelCheckpointInterval = 0;
  });
  "refused: readModelCheckpointInterval = 86401" = check.refused (envOf {
    readModelCheckpointInterval = 86401;
  });
  "refused: readModelCheckpointInterval a string" = check.refused (envOf {
    readModelCheckpointInterval = "5m";
  });
  "refused: readModelCheckpoint relative" = check.refused (envOf {
    readModelCheckpoint = "read-model.checkpoint";
  });
  "refused: readModelCheckpoint a directory" = check.refused (envOf {
    readModelCheckpoint = "/var/lib/policy-service/";
  });
  "refused: snapshotFrequency = 0" = check.refused (envOf {
    snapshotFrequency = 0;
  });
  "refused: snapshotFrequency = -5" = check.refused (envOf {
    snapshotFrequency = -5;
  });
  "refused: logLevel = \"verbose\"" = check.refused (envOf {
    logLevel = "verbose";
  });
  "refused: natsUrl without a nats/tls scheme" = check.refused (envOf {
    natsUrl = "localhost:4222";
  });
  "refused: streamName with a dot" = check.refused (envOf {
    streamName = "POLICY.EVENTS";
  });
  "refused: duplicateWindow below 120 s" = check.refused (envOf {
    duplicateWindow = 60;
  });
  "refused: duplicateWindow above 7 days (the service's limit)" = check.refused (envOf {
    duplicateWindow = 604801;
  });
  "refused: streamName longer than 64 characters" = check.refused (envOf {
    streamName = lib.concatStrings (lib.genList (_: "A") 65);
  });
  "refused: a secret given as a Nix path literal (would land in the store)" = check.refused (envOf {
    credentialsFile = ./nixos-module.nix;
  });
  "refused: a secret inside the Nix store" = check.refused (envOf {
    tokenFile = "${builtins.storeDir}/00000000000000000000000000000000-token";
  });
  "assertion: natsUser without passwordFile" = check.eq (check.failedAssertions (withSetting {
    natsUser = "svc";
  })) [ "services.policy-service: natsUser and passwordFile must be set together." ];
  "assertion: credentials in natsUrl" = check.isTrue (
    check.failedAssertions (withSetting {
      natsUrl = "nats://user:secret@localhost:4222";
    }) != [ ]
  ) "no assertion failed";
  "assertion: audit stream named like the event stream" = check.isTrue (
    check.failedAssertions (withSetting {
      audit.streamName = "POLICY_EVENTS";
    }) != [ ]
  ) "no assertion failed";
  "assertion: two authentication methods" = check.isTrue (
    check.failedAssertions (withSetting {
      tokenFile = "/run/a";
      credentialsFile = "/run/b";
    }) != [ ]
  ) "no assertion failed";
  "warning: snapshotFrequency outside 50-1000, none at 50 or 100" =
    let
      ours = config: lib.length (lib.filter (lib.hasInfix "snapshotFrequency") config.warnings);
    in
    check.eq
      {
        at20 = ours (withSetting {
          snapshotFrequency = 20;
        });
        at50 = ours (withSetting {
          snapshotFrequency = 50;
        });
        at100 = ours basic;
        at5000 = ours (withSetting {
          snapshotFrequency = 5000;
        });
      }
      {
        at20 = 1;
        at50 = 0;
        at100 = 0;
        at5000 = 1;
      };
  # NixOS' unitOption (nixos/lib/systemd-unit-options.nix): list definitions of one key
  # concatenate; a list beside a scalar definition is an evaluation error.
  "systemd: a user's list beside our list concatenates (RestrictAddressFamilies)" =
    check.eq
      (lib.sort lib.lessThan
        (unitOf (eval [
          flake.leafModule
          enabled
          { systemd.services.policy-service.serviceConfig.RestrictAddressFamilies = [ "AF_NETLINK" ]; }
        ])).serviceConfig.RestrictAddressFamilies
      )
      [
        "AF_INET"
        "AF_INET6"
        "AF_NETLINK"
        "AF_UNIX"
      ];
  "systemd: a user's list beside our scalar ExecStartPre is refused, as NixOS refuses it" =
    check.refused
      (unitOf (eval [
        flake.leafModule
        enabled
        {
          systemd.services.policy-service.serviceConfig.ExecStartPre = [ "/run/current-system/sw/bin/true" ];
        }
      ])).serviceConfig.ExecStartPre;
  "systemd: a user's scalar beside our list is refused too" =
    check.refused
      (unitOf (eval [
        flake.leafModule
        enabled
        { systemd.services.policy-service.serviceConfig.SystemCallFilter = "@system-service"; }
      ])).serviceConfig.SystemCallFilter;
  "operator command: `policy-service` on the system PATH with the service's environment, running the package" =
    let
      command = operatorCommandOf basic;
    in
    check.eq
      {
        exports = command.exports or null;
        execsPackage = lib.hasInfix "exec ${exe} \"$@\"" (command.text or "");
      }
      {
        exports = defaultEnvironment;
        execsPackage = true;
      };
  "operator command: credential variables name the configured files; no secret, no $CREDENTIALS_DIRECTORY" =
    let
      command = operatorCommandOf withSecretFiles;
    in
    check.eq
      {
        inherit (command) exports;
        credentialsDirectory = lib.hasInfix "CREDENTIALS_DIRECTORY" command.text;
        # The environment file is read when the command runs (it may hold secrets).
        sourcesEnvironmentFile = lib.hasInfix ". /run/secrets/policy-service.env" command.text;
      }
      {
        exports = defaultEnvironment // {
          NATS_USER = "svc";
          NATS_PASSWORD_FILE = "/run/secrets/nats-password";
          NATS_CA_FILE = "/etc/nats/ca.pem";
          NATS_CERT_FILE = "/etc/nats/client.pem";
          NATS_KEY_FILE = "/run/secrets/client-key.pem";
        };
        credentialsDirectory = false;
        sourcesEnvironmentFile = true;
      };
  "operator command: without arguments it refuses to start a second service instance" =
    check.contains (operatorCommandOf basic).text ''if [ "$#" -eq 0 ]; then'';
  "server-name guard: routes without networking.hostName (server name \"nixos\") are refused, naming the fix" =
    check.eq (serverNameFailures (clustered { })) [
      ''services.nats has cluster routes but its server name is "nixos", a default every leaf shares (networking.hostName is not set): JetStream clustering needs a unique name per node. Set networking.hostName (services.nats.serverName follows it) or services.nats.serverName to a name unique to this leaf.''
    ];
  "server-name guard: routes with services.nats.serverName = \"nats\" (nixpkgs' default) are refused" =
    check.eq (lib.length (
      serverNameFailures (clustered {
        networking.hostName = "leaf-1";
        services.nats.serverName = "nats";
      })
    )) 1;
  "server-name guard: quiet with a unique networking.hostName or services.nats.serverName, or without routes" =
    check.eq
      {
        hostName = serverNameFailures (clustered {
          networking.hostName = "leaf-1";
        });
        serverName = serverNameFailures (clustered {
          services.nats.serverName = "n1";
        });
        singleLeaf = serverNameFailures (eval [
          flake.leafModule
          enabled
          { services.nats.enable = true; }
        ]);
      }
      {
        hostName = [ ];
        serverName = [ ];
        singleLeaf = [ ];
      };
  "validateConfig: off by default only when nats.conf names a file outside the store (the build cannot read it); explicit true wins" =
    let
      validate =
        nats:
        (eval [
          flake.leafModule
          enabled
          {
            services.nats = {
              enable = true;
            }
            // nats;
          }
        ]).services.nats.validateConfig;
    in
    check.eq
      {
        plain = validate { };
        tlsOutsideStore = validate { settings.tls.cert_file = "/run/secrets/nats-cert.pem"; };
        clusterTlsOutsideStore = validate { settings.cluster.tls.key_file = "/var/lib/nats/key.pem"; };
        tlsInStore = validate {
          settings.tls.ca_file = "${builtins.storeDir}/00000000000000000000000000000000-ca.pem";
        };
        explicit = validate {
          settings.tls.cert_file = "/run/secrets/nats-cert.pem";
          validateConfig = true;
        };
      }
      {
        plain = true;
        tlsOutsideStore = false;
        clusterTlsOutsideStore = false;
        tlsInStore = true;
        explicit = true;
      };
}
