# policy-service built from service/package-lock.json with importNpmLock: every
# dependency is fetched by the `resolved` URL and `integrity` hash the lock file records,
# so there is no npmDepsHash to keep current.
#
# Node is nixpkgs' default `nodejs` (24 in nixpkgs 26.05), the same one buildNpmPackage
# uses by default; Node 20 is end of life and nixpkgs 26.05 refuses it as insecure.
# Override with `policy-service.override { nodejs = pkgs.nodejs_22; }` (the lowest Node
# in package.json's engines).
{
  lib,
  buildNpmPackage,
  importNpmLock,
  nodejs,
  nats-server,
  natscli,
}:
let
  packageJson = lib.importJSON ./package.json;
in
buildNpmPackage {
  pname = packageJson.name;
  inherit (packageJson) version;

  src = lib.fileset.toSource {
    root = ./.;
    fileset = lib.fileset.unions [
      ./package.json
      ./package-lock.json
      ./tsconfig.json
      ./tsconfig.build.json
      ./src
      (lib.fileset.maybeMissing ./test)
    ];
  };

  inherit nodejs;
  npmDeps = importNpmLock { npmRoot = ./.; };
  npmConfigHook = importNpmLock.npmConfigHook;

  # Unit tests, then the integration tests against a real nats-server (and natscli, for
  # the tests that drive the service through it) from nixpkgs.
  doCheck = true;
  nativeCheckInputs = [
    nats-server
    natscli
  ];
  checkPhase = ''
    runHook preCheck
    export NATS_SERVER_BIN=${lib.getExe nats-server}
    export NATS_CLI_BIN=${lib.getExe natscli}
    export HOME=$TMPDIR
    npm run test:unit
    npm run test:integration
    runHook postCheck
  '';

  meta = {
    description = packageJson.description;
    license = lib.licenses.mit;
    mainProgram = "policy-service";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
