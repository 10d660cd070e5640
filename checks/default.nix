# checks.<system> of the flake: the offline evaluation cases (tests/nix/cases) run again
# against the real nixpkgs and nix-darwin, the real package build, the options doc and
# formatting. `nix flake check` builds them.
{
  self,
  lib,
  pkgs,
  nixpkgs,
  nix-darwin,
}:
let
  inherit (pkgs.stdenv.hostPlatform) system isLinux isDarwin;
  # NixOS configurations are evaluated for the Linux system of the same architecture.
  linuxSystem = lib.replaceStrings [ "darwin" ] [ "linux" ] system;

  # What a real machine's hardware-configuration.nix would add, so NixOS' own
  # assertions (a root file system, a boot loader) hold.
  nixosBase = {
    fileSystems."/" = {
      device = "/dev/disk/by-label/nixos";
      fsType = "ext4";
    };
    boot.loader.grub.enable = false;
    nixpkgs.hostPlatform = linuxSystem;
    system.stateVersion = "26.05";
  };
  nixosSystem =
    args:
    nixpkgs.lib.nixosSystem {
      modules = [ nixosBase ] ++ args.modules;
    };
  darwinSystem =
    args:
    nix-darwin.lib.darwinSystem {
      modules = [
        {
          nixpkgs.hostPlatform = system;
          system.stateVersion = 6;
        }
      ]
      ++ args.modules;
    };

  harness = import ../tests/nix/lib/harness.nix {
    inherit lib nixosSystem;
    repo = self.outPath;
    flake = self;
    darwinSystem = if isDarwin then darwinSystem else null;
    standIn = false;
  };
  # Runs evaluation cases; the derivation fails if any of them does.
  evalCases =
    name: files:
    let
      results = lib.concatMap (
        file:
        lib.mapAttrsToList (label: r: {
          name = "${lib.removeSuffix ".nix" (baseNameOf file)}: ${label}";
          status =
            if r ? skip then
              "skip"
            else if r.ok then
              "ok"
            else
              "not ok";
          detail = r.detail or r.skip or "";
        }) (import file harness)
      ) files;
      report = builtins.unsafeDiscardStringContext (
        lib.concatMapStrings (
          r: "${r.status} - ${r.name}${lib.optionalString (r.status != "ok") "\n    ${r.detail}"}\n"
        ) results
      );
    in
    pkgs.runCommand name
      {
        passAsFile = [ "report" ];
        inherit report;
      }
      ''
        cat "$reportPath"
        if grep -q '^not ok' "$reportPath"; then exit 1; fi
        cp "$reportPath" "$out"
      '';

  nixosModuleSystem = nixosSystem {
    modules = [
      self.leafModule
      {
        services.nats = {
          enable = true;
          jetstream = true;
        };
        services.policy-service.enable = true;
      }
    ];
  };
  # The unit text NixOS' systemd module generates (what lands in /etc/systemd/system).
  unitFile = name: pkgs.writeText name nixosModuleSystem.config.systemd.units.${name}.text;
in
{
  package = self.packages.${system}.policy-service;

  # The NixOS cases and the guide's examples through nixpkgs.lib.nixosSystem.
  nixos-module-eval = evalCases "nixos-module-eval" [
    ../tests/nix/cases/nixos-module.nix
    ../tests/nix/cases/seed-examples.nix
    ../tests/nix/cases/flake-outputs.nix
    ../tests/nix/cases/secrets-not-in-store.nix
  ];

  options-doc =
    pkgs.runCommand "options-doc-is-current"
      {
        rendered = import ../tests/nix/lib/options-doc.nix {
          inherit lib;
          repo = self.outPath;
        };
        passAsFile = [ "rendered" ];
      }
      ''
        if ! diff <(cat "$renderedPath"; echo) ${../docs/options.md}; then
          echo "docs/options.md is stale: run tests/nix/gen-options-doc" >&2
          exit 1
        fi
        touch "$out"
      '';

  # The lint of tests/nix/lint with nixpkgs' own tools: nixfmt (RFC 166) and deadnix on every
  # .nix file except tests/nix/examples (verbatim copies of the deployment guide's blocks).
  formatting =
    pkgs.runCommand "nix-lint"
      {
        nativeBuildInputs = [
          pkgs.nixfmt
          pkgs.deadnix
        ];
      }
      ''
        cd ${self.outPath}
        files=$(find . -name '*.nix' -not -path './tests/nix/examples/*' -not -path '*/node_modules/*' | sort)
        nixfmt --check $files
        deadnix --fail $files
        touch "$out"
      '';
}
// lib.optionalAttrs isLinux {
  # The generated unit files, written by the real NixOS systemd module.
  nixos-module = pkgs.runCommand "policy-service-nixos-unit" { } ''
    unit=${unitFile "policy-service.service"}
    cat "$unit"
    grep -qx 'Type=exec' "$unit"
    grep -qx 'Restart=on-failure' "$unit"
    grep -qx 'ProtectSystem=strict' "$unit"
    grep -q '^After=.*nats.service' "$unit"
    grep -q 'STREAM_NAME=POLICY_EVENTS' "$unit"
    if grep -q MemoryDenyWriteExecute "$unit"; then exit 1; fi
    mkdir -p "$out"
    cp "$unit" "$out/policy-service.service"
    cp ${unitFile "nats.service"} "$out/nats.service"
  '';

  # The three-node NixOS VM tests, each one call of lib.mkLeafClusterTest (needs KVM):
  # our example leaves, and leaves with TLS and authentication as a user's would be.
  cluster = import ../tests/cluster.nix {
    inherit pkgs;
    inherit (self.lib) mkLeafClusterTest;
  };
  cluster-tls-auth = import ../tests/cluster/tls-auth.nix {
    inherit pkgs;
    inherit (self.lib) mkLeafClusterTest;
  };
}
// lib.optionalAttrs isDarwin {
  # The darwin cases through nix-darwin's darwinSystem, and the built launchd plists.
  darwin-module = evalCases "darwin-module-eval" [
    ../tests/nix/cases/darwin-module.nix
    ../tests/nix/cases/seed-examples.nix
    ../tests/nix/cases/secrets-not-in-store.nix
  ];
  darwin-system =
    (darwinSystem {
      modules = [
        self.leafModule
        {
          services.nats = {
            enable = true;
            jetstream = true;
          };
          services.policy-service.enable = true;
        }
      ];
    }).system;
}
