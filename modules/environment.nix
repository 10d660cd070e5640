# The service's environment, computed from services.policy-service for both platforms.
# `secretPath name file` says where the service finds a secret at run time: on NixOS the
# systemd credentials directory (`$CREDENTIALS_DIRECTORY/<name>`), on nix-darwin the configured file itself.
# Returns { environment; operatorEnvironment; secrets; }: secrets maps credential names to the
# configured files; operatorEnvironment is the same environment with every secret at its
# configured file (for the operator command, ./operator-command.nix, which runs outside systemd).
{
  lib,
  cfg,
  secretPath,
}:
let
  # credential name -> [ environment variable, configured file ]
  secretFiles = {
    nats-creds = [
      "NATS_CREDS_FILE"
      cfg.credentialsFile
    ];
    nats-nkey-seed = [
      "NATS_NKEY_SEED_FILE"
      cfg.nkeySeedFile
    ];
    nats-password = [
      "NATS_PASSWORD_FILE"
      cfg.passwordFile
    ];
    nats-token = [
      "NATS_TOKEN_FILE"
      cfg.tokenFile
    ];
    nats-ca = [
      "NATS_CA_FILE"
      cfg.tls.caFile
    ];
    nats-cert = [
      "NATS_CERT_FILE"
      cfg.tls.certFile
    ];
    nats-key = [
      "NATS_KEY_FILE"
      cfg.tls.keyFile
    ];
  };
  # Interpolation copies a Nix path literal (possible only for the public CA/certificate)
  # into the store; secret options accept strings only.
  secrets = lib.mapAttrs (_: v: "${lib.elemAt v 1}") (
    lib.filterAttrs (_: v: lib.elemAt v 1 != null) secretFiles
  );
  environmentWith =
    secretPath:
    {
      NATS_URL = cfg.natsUrl;
      STREAM_NAME = cfg.streamName;
      LOG_LEVEL = cfg.logLevel;
      SNAPSHOT_FREQUENCY = toString cfg.snapshotFrequency;
      STREAM_REPLICAS = toString cfg.streamReplicas;
      DUPLICATE_WINDOW = toString cfg.duplicateWindow;
      AUDIT_ENABLED = lib.boolToString cfg.audit.enable;
      AUDIT_STREAM_NAME = cfg.audit.streamName;
      AUDIT_MAX_AGE_DAYS = toString cfg.audit.maxAgeDays;
      HEAP_GROWING_PERCENT = toString cfg.heap.growingPercent;
      NODE_ENV = "production";
    }
    // lib.optionalAttrs (cfg.heap.nodeOptions != "") { NODE_OPTIONS = cfg.heap.nodeOptions; }
    // lib.optionalAttrs (cfg.natsUser != null) { NATS_USER = cfg.natsUser; }
    // lib.optionalAttrs (cfg.readModelCheckpoint != null) {
      READ_MODEL_CHECKPOINT = cfg.readModelCheckpoint;
      READ_MODEL_CHECKPOINT_INTERVAL_S = toString cfg.readModelCheckpointInterval;
    }
    # An IPv6 address is bracketed: METRICS_LISTEN is host:port.
    // lib.optionalAttrs cfg.metrics.enable {
      METRICS_LISTEN =
        let
          address = cfg.metrics.listenAddress;
        in
        "${if lib.hasInfix ":" address then "[${address}]" else address}:${toString cfg.metrics.port}";
    }
    // lib.mapAttrs' (
      name: file: lib.nameValuePair (lib.head secretFiles.${name}) (secretPath name file)
    ) secrets;
in
{
  inherit secrets;
  environment = environmentWith secretPath;
  operatorEnvironment = environmentWith (_name: file: file);
}
