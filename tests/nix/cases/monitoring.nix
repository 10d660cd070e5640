# Monitoring: services.policy-service.metrics.* becomes METRICS_LISTEN (off by default, loopback by
# default, IPv6 bracketed) on NixOS and nix-darwin, and the Prometheus example of docs/operations.md,
# read from the doc between its markers, evaluates as written and scrapes exactly where the service
# listens; its alert rules name only metrics the service defines (service/src/app/metrics.ts).
#
# Offline the NixOS stand-in has no services.prometheus, so `prometheusOptions` below declares the
# part of it the example uses, with nixpkgs' own types, copied in shape from
# nixos/modules/services/monitoring/prometheus/default.nix (nixos-26.05): `scrapeConfigs` is
# `listOf promTypes.scrape_config`, whose `job_name` is a required str, `scrape_interval` and
# `metrics_path` are `nullOr str` (mkOpt / mkDefOpt), `static_configs` is `nullOr (listOf
# promTypes.static_config)` with `targets` (listOf str, required) and `labels` (attrsOf str,
# default {}); `rules` is `listOf str`; submodules refuse unknown attributes, so a misspelt field
# fails here as it would on a real system. In the flake checks (real nixpkgs) the real module is used.
{
  lib,
  repo,
  flake,
  nixosSystem,
  darwinSystem,
  check,
  standIn,
  ...
}:
let
  inherit (lib) mkOption types;
  nullOr =
    type:
    mkOption {
      type = types.nullOr type;
      default = null;
    };
  prometheusOptions = {
    options.services.prometheus = {
      enable = lib.mkEnableOption "Prometheus monitoring daemon";
      rules = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      scrapeConfigs = mkOption {
        default = [ ];
        type = types.listOf (
          types.submodule {
            options = {
              job_name = mkOption { type = types.str; };
              scrape_interval = nullOr types.str;
              scrape_timeout = nullOr types.str;
              metrics_path = nullOr types.str;
              scheme = nullOr (
                types.enum [
                  "http"
                  "https"
                ]
              );
              static_configs = nullOr (
                types.listOf (
                  types.submodule {
                    options = {
                      targets = mkOption { type = types.listOf types.str; };
                      labels = mkOption {
                        type = types.attrsOf types.str;
                        default = { };
                      };
                    };
                  }
                )
              );
            };
          }
        );
      };
    };
  };

  nixos = modules: (nixosSystem { inherit modules; }).config;
  envOf = config: config.systemd.services.policy-service.environment;
  withMetrics =
    metrics:
    envOf (nixos [
      flake.leafModule
      {
        services.policy-service = {
          enable = true;
          inherit metrics;
        };
      }
    ]);

  # The documented example, as written between its markers in docs/operations.md.
  doc = builtins.readFile (repo + "/docs/operations.md");
  between =
    begin: end: text:
    let
      after = lib.splitString begin text;
    in
    if lib.length after != 2 then null else lib.head (lib.splitString end (lib.elemAt after 1));
  block =
    between "<!-- prometheus-example:begin -->\n```nix\n" "```\n<!-- prometheus-example:end -->"
      doc;
  example = import (builtins.toFile "prometheus-example.nix" "{\n${block}\n}");
  # Added to a leaf's configuration, which enables the service.
  evaluated = nixos (
    [
      flake.leafModule
      { services.policy-service.enable = true; }
      example
    ]
    ++ lib.optional standIn prometheusOptions
  );
  prometheus = evaluated.services.prometheus;
  listen = (envOf evaluated).METRICS_LISTEN or null;
  targets = lib.concatMap (job: lib.concatMap (group: group.targets) (job.static_configs or [ ])) (
    lib.filter (job: job.job_name == "policy-service") prometheus.scrapeConfigs
  );
  ruleExprs =
    lib.concatMap (group: map (rule: rule.expr) group.rules)
      (builtins.fromJSON (lib.head prometheus.rules)).groups;
  # policy_service_* names in the rules; each must be defined by the service (its metric name with a
  # policy_service_ prefix, possibly with a _total suffix the definition carries itself).
  metricsSource = builtins.readFile (repo + "/service/src/app/metrics.ts");
  namesIn = expr: lib.filter lib.isList (builtins.split "(policy_service_[a-z_]+)" expr);
  ruleMetrics = lib.unique (map lib.head (lib.concatMap namesIn ruleExprs));
  undefined = lib.filter (
    name:
    let
      short = lib.removePrefix "policy_service_" name;
    in
    !(lib.hasInfix "`\${PREFIX}${short}`" metricsSource)
    && !(lib.hasInfix "\"${short}\"" metricsSource)
    && !(lib.hasInfix "\"${lib.removeSuffix "_total" short}\"" metricsSource)
  ) ruleMetrics;

  # A refused example (a misspelt option, a wrong type) fails these checks instead of the whole case.
  facts = {
    inherit
      listen
      targets
      ruleExprs
      ruleMetrics
      undefined
      ;
    inherit (prometheus) enable;
  };
  tried = builtins.tryEval (builtins.deepSeq facts facts);
  refusedDetail = "the example does not evaluate (run tests/nix/lib/run-case.nix on this case with --show-trace)";

  darwinEnvOf =
    metrics:
    (darwinSystem {
      modules = [
        flake.darwinModules.default
        {
          services.policy-service = {
            enable = true;
            inherit metrics;
          };
        }
      ];
    }).config.launchd.daemons.policy-service.serviceConfig.EnvironmentVariables;
in
{
  "metrics: off by default (no METRICS_LISTEN)" = check.isTrue (
    !(withMetrics { } ? METRICS_LISTEN)
  ) "METRICS_LISTEN set without metrics.enable";
  "metrics: enable listens on 127.0.0.1:9464 by default" =
    check.eq
      (withMetrics {
        enable = true;
      }).METRICS_LISTEN
      "127.0.0.1:9464";
  "metrics: listenAddress and port; an IPv6 address is bracketed" =
    check.eq
      [
        (withMetrics {
          enable = true;
          listenAddress = "10.0.0.5";
          port = 9500;
        }).METRICS_LISTEN
        (withMetrics {
          enable = true;
          listenAddress = "::1";
        }).METRICS_LISTEN
      ]
      [ "10.0.0.5:9500" "[::1]:9464" ];
  "metrics: port 0 and 65536 are refused" = check.refused [
    (withMetrics {
      enable = true;
      port = 0;
    }).METRICS_LISTEN
    (withMetrics {
      enable = true;
      port = 65536;
    }).METRICS_LISTEN
  ];
  "operations.md Prometheus example: found between its markers" = check.isTrue (
    block != null && lib.hasInfix "scrapeConfigs" block
  ) "no nix block between <!-- prometheus-example:begin/end --> in docs/operations.md";
  "operations.md Prometheus example: evaluates, and scrapes where the service listens" =
    if !tried.success then
      check.isTrue false refusedDetail
    else
      check.eq
        {
          inherit (tried.value) listen targets enable;
        }
        {
          listen = "127.0.0.1:9464";
          targets = [ "127.0.0.1:9464" ];
          enable = true;
        };
  "operations.md Prometheus example: rules are one JSON rule file whose alerts name defined metrics" =
    if !tried.success then
      check.isTrue false refusedDetail
    else
      check.isTrue
        (
          lib.length tried.value.ruleExprs == 4
          && tried.value.ruleMetrics != [ ]
          && tried.value.undefined == [ ]
        )
        "rules: ${check.show tried.value.ruleExprs}; metrics not defined in service/src/app/metrics.ts: ${check.show tried.value.undefined}";
}
// (
  if darwinSystem == null then
    {
      "metrics (darwin)" = {
        skip = "no nix-darwin evaluation here (offline: set POLICY_SERVICE_NIX_DARWIN; flake checks: darwin systems only)";
      };
    }
  else
    {
      "metrics (darwin): the same METRICS_LISTEN in the launchd daemon's environment" =
        check.eq
          [
            ((darwinEnvOf { }) ? METRICS_LISTEN)
            (darwinEnvOf {
              enable = true;
              port = 9500;
            }).METRICS_LISTEN
          ]
          [ false "127.0.0.1:9500" ];
    }
)
