# Options of services.policy-service shared by NixOS and nix-darwin, declared once.
# Platform modules (./nixos.nix, ./darwin.nix) import this file and implement it;
# ./environment.nix turns these options into the service's environment variables.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  cfg = config.services.policy-service;
  # JetStream names as the service accepts them (STREAM_NAME, AUDIT_STREAM_NAME).
  streamNameType = types.strMatching "[A-Za-z0-9_-]{1,64}";
  # Secrets and keys are file paths read at run time: a string, never a Nix path
  # literal, so their contents can never be copied into the world-readable store.
  secretFileOption =
    what: example:
    mkOption {
      type = types.nullOr types.externalPath;
      default = null;
      inherit example;
      description = ''
        Absolute path of a file holding ${what}, read when the service starts.
        The file stays outside the Nix store; only its path is part of the configuration.
        On NixOS it is handed to the service with systemd `LoadCredential`, so it may stay
        readable by root only; on nix-darwin it must be readable by the daemon's user.
      '';
    };
in
{
  options.services.policy-service = {
    enable = lib.mkEnableOption "the policy service, an event-sourced policy manager on NATS JetStream";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../service/package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage \"\${cim-domain-policy}/service/package.nix\" { }";
      example = lib.literalExpression "cim-domain-policy.packages.\${pkgs.stdenv.hostPlatform.system}.default";
      description = ''
        The policy-service package to run. By default it is built from this repository with
        the system's own `pkgs`, so no overlay is needed.
      '';
    };

    natsUrl = mkOption {
      type = types.strMatching "(nats|tls|ws|wss)://[^[:space:]]+";
      default = "nats://localhost:4222";
      example = "tls://localhost:4222";
      description = ''
        URL of the NATS server on this leaf node (comma-separated for several). The service
        always talks to its local NATS server; the NATS servers handle clustering.
        Use a `tls://` URL together with the `tls.*` options.
      '';
    };

    streamName = mkOption {
      type = streamNameType;
      default = "POLICY_EVENTS";
      example = "POLICY_EVENTS";
      description = ''
        Name of the JetStream stream holding the policy events. It must be the same on
        every leaf node of a cluster. The snapshot and idempotency key-value buckets are
        named after it (`<streamName>_SNAPSHOTS`, `<streamName>_COMMANDS`).
      '';
    };

    logLevel = mkOption {
      type = types.enum [
        "trace"
        "debug"
        "info"
        "warn"
        "error"
      ];
      default = "info";
      example = "debug";
      description = "Minimum level of the service's log lines (JSON on standard output).";
    };

    snapshotFrequency = mkOption {
      type = types.ints.between 1 1000000;
      default = 100;
      example = 50;
      description = ''
        Number of events between two snapshots of an aggregate. Between 100 and 1000 is
        recommended; a smaller value writes more snapshots, a larger one replays more events
        on load. Values outside 50–1000 produce an evaluation warning; 0 or less is refused.
      '';
    };

    streamReplicas = mkOption {
      type = types.ints.between 1 5;
      default = 1;
      example = 3;
      description = ''
        Number of JetStream replicas of the event stream, its key-value buckets and the audit
        stream. Use 3 on a three-node cluster; it cannot exceed the number of NATS servers.
      '';
    };

    duplicateWindow = mkOption {
      type = types.ints.between 120 604800;
      default = 120;
      example = 600;
      description = ''
        JetStream duplicate-detection window of the event stream, in seconds (120 to 604800, i.e. 7 days).
        A command retried with the same `command_id` within it writes no second event.
      '';
    };

    heap = {
      nodeOptions = mkOption {
        type = types.str;
        default = (lib.importJSON ../service/package.json).config.nodeOptions;
        example = "--max-semi-space-size=32";
        description = ''
          `NODE_OPTIONS` of the service: V8 settings that only take effect when Node starts. The default,
          `--max-semi-space-size=8` (package.json `config.nodeOptions`, which scripts/run and the benchmark use
          too), keeps V8's young generation at 16 MiB instead of the up to 128 MiB it picks on a large machine;
          its cost is a little more GC time (docs/performance.md "Memory"). An empty string leaves V8's own sizes.
        '';
      };
      growingPercent = mkOption {
        type = types.ints.between 0 300;
        default = 30;
        example = 100;
        description = ''
          `HEAP_GROWING_PERCENT`: after a full garbage collection the old generation may grow by this percentage
          of what survived before the next one. The default bounds the heap to about 1.3 times the live heap
          (about 0.5 KiB per policy); a larger value trades memory for less GC time, 0 leaves V8's own factor
          (up to 4 times the live heap under a high allocation rate).
        '';
      };
    };

    readModelCheckpoint = mkOption {
      type = types.nullOr (types.strMatching "/.*[^/]");
      default = "/var/lib/policy-service/read-model.checkpoint";
      example = null;
      description = ''
        `READ_MODEL_CHECKPOINT`: file of the read-model checkpoint, the in-memory read side as of a stream
        sequence, written at a graceful stop and every
        {option}`services.policy-service.readModelCheckpointInterval` seconds (mode 0600). At start it is used
        only when it belongs to the same stream, this build wrote it and it is intact; the instance then replays
        only the events after it instead of the whole stream (docs/operations.md "Read-model checkpoint"). The
        default lies in the service's state directory (0700); `null` turns it off (every start replays the whole
        stream).
      '';
    };

    readModelCheckpointInterval = mkOption {
      type = types.ints.between 1 86400;
      default = 300;
      example = 60;
      description = ''
        `READ_MODEL_CHECKPOINT_INTERVAL_S`: seconds between writes of the read-model checkpoint while the
        service runs (1 to 86400; only when there are new events). A crash or a kill without a graceful stop
        costs the next start the replay of at most this interval's events. Each write serialises the whole read
        side in short slices (docs/performance.md), so a shorter interval costs more CPU. Not passed when
        {option}`services.policy-service.readModelCheckpoint` is `null`.
      '';
    };

    credentialsFile = secretFileOption "NATS user credentials (a `.creds` file: JWT and NKey seed)" "/run/secrets/policy-service.creds";
    nkeySeedFile = secretFileOption "an NKey seed for NATS authentication" "/run/secrets/policy-service.nk";

    natsUser = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "policy-service";
      description = ''
        NATS user name for user/password authentication; the password is read from
        {option}`services.policy-service.passwordFile`.
      '';
    };
    passwordFile = secretFileOption "the NATS password of {option}`services.policy-service.natsUser`" "/run/secrets/policy-service-nats-password";
    tokenFile = secretFileOption "a NATS authentication token" "/run/secrets/policy-service-nats-token";

    tls = {
      caFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/etc/ssl/nats/ca.pem";
        description = "Path of the CA certificate (PEM) that signed the NATS server's certificate.";
      };
      certFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/etc/ssl/nats/policy-service.pem";
        description = "Path of the client certificate (PEM) for NATS mutual TLS; set together with {option}`services.policy-service.tls.keyFile`.";
      };
      keyFile = secretFileOption "the private key (PEM) of {option}`services.policy-service.tls.certFile`" "/run/secrets/policy-service-key.pem";
    };

    environmentFile = mkOption {
      type = types.nullOr types.externalPath;
      default = null;
      example = "/run/secrets/policy-service.env";
      description = ''
        Path of a file of `NAME=value` lines added to the service's environment when it starts
        (for example secrets a deployment tool writes). It is read at run time, never copied
        into the Nix store; its variables override the ones these options set.
      '';
    };

    metrics = {
      enable = mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = ''
          Whether to serve Prometheus metrics on `http://<listenAddress>:<port>/metrics` and readiness on
          `/ready` (200 once the instance serves requests, 503 while it starts, is cut off from NATS or stops).
          The metrics count commands, evaluations and queries by name and outcome code, with latency
          histograms, conflict retries, idempotent replays, read-side lag and pending expiries.
        '';
      };
      listenAddress = mkOption {
        type = types.str;
        default = "127.0.0.1";
        example = "0.0.0.0";
        description = ''
          Address the metrics endpoint listens on. The default keeps it on loopback, for a Prometheus on the
          same host; the endpoint has no authentication, so expose it further only on a trusted network.
        '';
      };
      port = mkOption {
        type = types.ints.between 1 65535;
        default = 9464;
        example = 9464;
        description = "TCP port of the metrics endpoint (9464 is the port conventionally used by Prometheus client exporters).";
      };
    };

    audit = {
      enable = mkOption {
        type = types.bool;
        default = true;
        example = false;
        description = "Whether to record every command outcome in the audit stream.";
      };
      streamName = mkOption {
        type = streamNameType;
        default = "POLICY_AUDIT";
        example = "POLICY_AUDIT";
        description = "Name of the JetStream audit stream (subjects `audit.policy.>`).";
      };
      maxAgeDays = mkOption {
        type = types.ints.between 1 36500;
        default = 90;
        example = 365;
        description = "Days an audit record is kept before JetStream removes it.";
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = !(lib.hasInfix "@" cfg.natsUrl);
        message = "services.policy-service.natsUrl must not contain credentials (they would land in the Nix store); use credentialsFile, nkeySeedFile, natsUser/passwordFile or tokenFile.";
      }
      {
        assertion = cfg.audit.streamName != cfg.streamName;
        message = "services.policy-service.audit.streamName must differ from streamName.";
      }
      {
        assertion = (cfg.natsUser == null) == (cfg.passwordFile == null);
        message = "services.policy-service: natsUser and passwordFile must be set together.";
      }
      {
        assertion = (cfg.tls.certFile == null) == (cfg.tls.keyFile == null);
        message = "services.policy-service: tls.certFile and tls.keyFile must be set together.";
      }
      {
        assertion =
          lib.count (x: x != null) [
            cfg.credentialsFile
            cfg.nkeySeedFile
            cfg.passwordFile
            cfg.tokenFile
          ] <= 1;
        message = "services.policy-service: set at most one of credentialsFile, nkeySeedFile, natsUser/passwordFile and tokenFile.";
      }
    ];
    warnings = lib.optional (cfg.snapshotFrequency < 50 || cfg.snapshotFrequency > 1000) ''
      services.policy-service.snapshotFrequency = ${toString cfg.snapshotFrequency} is outside the recommended range
      (100–1000; 50 is fine for development): it makes snapshots very frequent or aggregate loads slow.
    '';
  };
}
