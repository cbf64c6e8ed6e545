# Packages for the checks, built by ekaci like any job and put on the
# checks' PATH. No nixpkgs here: a shell script is the whole package.
let lib = import ./lib.nix; in
{
  nixlint = lib.script "demo-nixlint" [ ] ''
    /bin/mkdir -p $out/bin
    /bin/cat > $out/bin/demo-nixlint <<'SCRIPT'
    #!/bin/sh
    # demo-nixlint FILE...: every brace opened is closed.
    status=0
    for f in "$@"; do
      open=$(tr -cd '{' < "$f" | wc -c)
      close=$(tr -cd '}' < "$f" | wc -c)
      if [ "$open" != "$close" ]; then
        echo "$f: $open '{' but $close '}'"
        status=1
      fi
    done
    echo "demo-nixlint: $# files, braces balanced: $([ $status = 0 ] && echo yes || echo no)"
    exit $status
    SCRIPT
    /bin/sed -i 's/^    //' $out/bin/demo-nixlint
    /bin/chmod +x $out/bin/demo-nixlint
  '';
}
