# darwin-configuration.nix
{
  imports = [
    (builtins.fetchGit {
      url = "https://github.com/thecowboyai/cim-domain-policy";
      ref = "main";
    } + "/deployment/nix/leaf.nix")
  ];

  services.policy-service = {
    enable = true;
    natsUrl = "nats://localhost:4222";
  };
}
