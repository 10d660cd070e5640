# The nix-darwin side, through nix-darwin's own eval-config.nix: the launchd plist of
# org.nixos.policy-service through each entry point (leafModule, darwinModules.default,
# deployment/nix/leaf.nix), the activation script, the user, and darwinModules.nats.
{
  lib,
  repo,
  flake,
  darwinSystem,
  check,
  defaultEnvironment,
  operatorCommandOf,
  ...
}:
if darwinSystem == null then
  {
    "nix-darwin evaluation" = {
      skip = "no nix-darwin evaluation here (offline: set POLICY_SERVICE_NIX_DARWIN; flake checks: darwin systems only)";
    };
  }
else
  let
    eval = modules: (darwinSystem { inherit modules; }).config;
    enabled = {
      services.policy-service.enable = true;
    };
    plistOf = config: config.environment.launchDaemons."org.nixos.policy-service.plist".text;
    natsPlistOf = config: config.environment.launchDaemons."org.nixos.nats.plist".text;
    entryPoints = {
      leafModule = flake.leafModule;
      darwinModules-default = flake.darwinModules.default;
      deployment-leaf = repo + "/deployment/nix/leaf.nix";
    };
    basic = eval [
      flake.leafModule
      enabled
    ];
    daemon = basic.launchd.daemons.policy-service.serviceConfig;
    plist = plistOf basic;
    package = basic.services.policy-service.package;
    withEnvFile = eval [
      flake.leafModule
      {
        services.policy-service = {
          enable = true;
          environmentFile = "/etc/policy-service/env";
          credentialsFile = "/etc/policy-service/nats.creds";
        };
      }
    ];
    withSecretFiles = eval [
      flake.leafModule
      {
        services.policy-service = {
          enable = true;
          natsUser = "svc";
          passwordFile = "/run/secrets/nats-password";
          tls = {
            caFile = "/etc/nats/ca.pem";
            certFile = "/etc/nats/client.pem";
            keyFile = "/run/secrets/client-key.pem";
          };
          environmentFile = "/run/secrets/policy-service.env";
        };
      }
    ];
    exe = "${package}/bin/policy-service";
    natsOnly = eval [
      flake.darwinModules.nats
      {
        services.nats = {
          enable = true;
          jetstream = true;
          serverName = "mac-1";
          serverConfig.cluster.port = 6222;
        };
      }
    ];
  in
  lib.mapAttrs' (
    name: module:
    lib.nameValuePair "entry point ${name} yields org.nixos.policy-service.plist" (
      check.contains (plistOf (eval [
        module
        enabled
      ])) "<string>org.nixos.policy-service</string>"
    )
  ) entryPoints
  // {
    "disabled by default: no policy-service or nats daemon" = check.eq (lib.intersectLists [
      "policy-service"
      "nats"
    ] (lib.attrNames (eval [ flake.leafModule ]).launchd.daemons)) [ ];
    "daemon: label, keep-alive, run-at-load, logs, user" = check.hasAll daemon {
      Label = "org.nixos.policy-service";
      KeepAlive = true;
      RunAtLoad = true;
      StandardOutPath = "/var/log/policy-service.log";
      StandardErrorPath = "/var/log/policy-service.error.log";
      UserName = "_policy-service";
      GroupName = "_policy-service";
      WorkingDirectory = "/var/lib/policy-service";
      Umask = 63;
    };
    "daemon: the same environment as on NixOS" =
      check.eq daemon.EnvironmentVariables defaultEnvironment;
    "plist text: label, KeepAlive, RunAtLoad, log paths, program" = check.isTrue (lib.all
      (lib.flip lib.hasInfix plist)
      [
        "<key>Label</key>\n\t<string>org.nixos.policy-service</string>"
        "<key>KeepAlive</key>\n\t<true/>"
        "<key>RunAtLoad</key>\n\t<true/>"
        "<key>StandardOutPath</key>\n\t<string>/var/log/policy-service.log</string>"
        "<key>StandardErrorPath</key>\n\t<string>/var/log/policy-service.error.log</string>"
        "<key>UserName</key>\n\t<string>_policy-service</string>"
        "exec ${package}/bin/policy-service</string>"
        "<key>NATS_URL</key>\n\t\t<string>nats://localhost:4222</string>"
      ]
    ) "plist lacks an expected entry:\n${plist}";
    "user: _policy-service with static ids, managed by nix-darwin" =
      check.eq
        {
          inherit (basic.users.users._policy-service) uid gid shell;
          gidOfGroup = basic.users.groups._policy-service.gid;
          known =
            lib.elem "_policy-service" basic.users.knownUsers
            && lib.elem "_policy-service" basic.users.knownGroups;
        }
        {
          uid = 536;
          gid = 536;
          shell = "/usr/bin/false";
          gidOfGroup = 536;
          known = true;
        };
    "activation: preActivation creates the working directory and log files" = check.isTrue (lib.all
      (lib.flip lib.hasInfix basic.system.activationScripts.preActivation.text)
      [
        "mkdir -p /var/lib/policy-service"
        "chown 536:536 /var/lib/policy-service"
        "touch /var/log/policy-service.log /var/log/policy-service.error.log"
      ]
    ) "preActivation lacks the directory setup";
    # nix-darwin runs only its fixed activation scripts: the text must reach /activate.
    "activation: the script nix-darwin actually runs contains it" =
      check.contains basic.system.activationScripts.script.text "mkdir -p /var/lib/policy-service";
    "environmentFile: sourced by a shell before exec; credentials passed as paths" = check.isTrue (
      let
        d = withEnvFile.launchd.daemons.policy-service;
      in
      d.command
      == "/bin/sh -c 'set -a; . /etc/policy-service/env; set +a; exec ${package}/bin/policy-service'"
      && d.environment.NATS_CREDS_FILE == "/etc/policy-service/nats.creds"
    ) "unexpected command/environment";
    "assertions hold" = check.noFailedAssertions basic;
    "readModelCheckpoint = null: neither READ_MODEL_CHECKPOINT nor its interval in the daemon's environment" =
      check.eq
        (
          let
            variables =
              (eval [
                flake.leafModule
                {
                  services.policy-service = {
                    enable = true;
                    readModelCheckpoint = null;
                  };
                }
              ]).launchd.daemons.policy-service.serviceConfig.EnvironmentVariables;
          in
          [
            (variables ? READ_MODEL_CHECKPOINT)
            (variables ? READ_MODEL_CHECKPOINT_INTERVAL_S)
          ]
        )
        [
          false
          false
        ];
    "readModelCheckpointInterval = 60: READ_MODEL_CHECKPOINT_INTERVAL_S in the daemon's environment" =
      check.eq
        ((eval [
          flake.leafModule
          {
            services.policy-service = {
              enable = true;
              readModelCheckpointInterval = 60;
            };
          }
        ])
        .launchd.daemons.policy-service.serviceConfig.EnvironmentVariables.READ_MODEL_CHECKPOINT_INTERVAL_S
        )
        "60";
    "refused: readModelCheckpointInterval = 0" = check.refused (
      plistOf (eval [
        flake.leafModule
        {
          services.policy-service = {
            enable = true;
            readModelCheckpointInterval = 0;
          };
        }
      ])
    );
    "refused: snapshotFrequency = 0" = check.refused (
      plistOf (eval [
        flake.leafModule
        {
          services.policy-service = {
            enable = true;
            snapshotFrequency = 0;
          };
        }
      ])
    );
    "darwinModules.nats: JSON settings with JetStream, server name and the serverConfig alias" =
      check.eq natsOnly.services.nats.settings
        {
          server_name = "mac-1";
          port = 4222;
          jetstream.store_dir = "/var/lib/nats";
          cluster.port = 6222;
        };
    "darwinModules.nats: launchd daemon org.nixos.nats running nats-server -c <config>" = check.isTrue (
      let
        p = natsPlistOf natsOnly;
      in
      lib.hasInfix "<string>org.nixos.nats</string>" p
      && lib.hasInfix "/bin/nats-server -c ${builtins.storeDir}/" p
      && lib.hasInfix "<key>UserName</key>\n\t<string>_nats</string>" p
      && lib.hasInfix "<key>KeepAlive</key>\n\t<true/>" p
    ) "nats plist:\n${natsPlistOf natsOnly}";
    "darwinModules.nats: no jetstream block when JetStream is off" =
      check.eq
        (eval [
          flake.darwinModules.nats
          { services.nats.enable = true; }
        ]).services.nats.settings
        {
          server_name = "nats";
          port = 4222;
        };
    "darwinModules.nats: data directory created on activation, _nats user" = check.isTrue (
      lib.hasInfix "mkdir -p /var/lib/nats" natsOnly.system.activationScripts.preActivation.text
      && natsOnly.users.users._nats.uid == 4222
      && lib.elem "_nats" natsOnly.users.knownUsers
    ) "missing data dir setup or user";
    "operator command: `policy-service` on the system PATH with the daemon's environment, running the package" =
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
    "operator command: credential variables name the configured files, as the daemon's do; no secret" =
      let
        command = operatorCommandOf withSecretFiles;
      in
      check.eq
        {
          inherit (command) exports;
          sameAsDaemon =
            command.exports
            == withSecretFiles.launchd.daemons.policy-service.serviceConfig.EnvironmentVariables;
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
          sameAsDaemon = true;
          sourcesEnvironmentFile = true;
        };
    "server-name guard: routes with the default server name \"nats\" are refused; quiet with a unique one" =
      let
        clustered =
          nats:
          lib.filter (lib.hasInfix "JetStream clustering needs a unique name") (
            check.failedAssertions (eval [
              flake.leafModule
              enabled
              {
                services.nats = {
                  enable = true;
                  jetstream = true;
                  settings.cluster.routes = [ "nats://mac-2:6222" ];
                }
                // nats;
              }
            ])
          );
      in
      check.eq
        {
          default = lib.length (clustered { });
          unique = clustered { serverName = "mac-1"; };
        }
        {
          default = 1;
          unique = [ ];
        };
  }
