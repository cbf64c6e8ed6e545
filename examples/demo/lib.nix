# Helpers for the demo's derivations: no nixpkgs, only /bin/sh and its
# builtins, so everything builds offline. @SALT@ is replaced with a fresh
# value by scripts/demo-repo.sh so every demo run builds anew.
rec {
  system = builtins.currentSystem;
  salt = "@SALT@";

  # step: writes one line naming itself and what it was built from (which
  # makes its inputs real dependencies).
  step = name: inputs: extra: derivation ({
    inherit name system salt inputs;
    builder = "/bin/sh";
    args = [ "-c" ''
      echo "building ${name}"
      line="${name}"
      for i in $inputs; do
        read -r dep < "$i"
        line="$line <- $dep"
      done
      echo "$line" > "$out"
    '' ];
  } // extra);

  # script: a derivation running the given shell code.
  script = name: inputs: code: derivation {
    inherit name system salt inputs;
    builder = "/bin/sh";
    args = [ "-c" code ];
  };
}
