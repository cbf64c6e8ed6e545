#!/bin/sh
# A check that passes: the demo-nixlint package (built from tools.nix by
# ekaci) on every Nix file.
exec demo-nixlint *.nix
