# A tiny repository for ekaci's demo: derivations that build offline with
# /bin/sh builtins only (no nixpkgs), so `make demo` needs nothing but Nix.
let
  system = builtins.currentSystem;
  # `make demo` writes a fresh salt here so every demo run builds anew
  # instead of finding the outputs of the last run in the store.
  salt = "";
  # step: a derivation whose builder writes one line, optionally reading
  # the outputs of its inputs (which makes them dependencies).
  step = name: inputs: derivation {
    inherit name system salt;
    builder = "/bin/sh";
    inputs = inputs;
    args = [ "-c" ''
      echo "building ${name}"
      line="${name}"
      for i in $inputs; do
        read -r dep < "$i"
        line="$line <- $dep"
      done
      echo "$line" > "$out"
      echo "done: $line"
    '' ];
  };
in rec {
  # A chain: base <- lib <- app.
  base = step "demo-base" [ ];
  lib = step "demo-lib" [ base ];
  app = step "demo-app" [ lib ];
  # A diamond on top of base.
  left = step "demo-left" [ base ];
  right = step "demo-right" [ base ];
  top = step "demo-top" [ left right ];
}
