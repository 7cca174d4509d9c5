# A flake without nixosConfigurations (nixeval's real-Nix tests).
{
  outputs = { self }: { lib.answer = 42; };
}
