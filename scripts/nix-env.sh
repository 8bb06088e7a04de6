# Sourced by run.sh and test.sh: flakes on, no substituters but those we configure.
export NIX_CONFIG="${NIX_CONFIG:-experimental-features = nix-command flakes
substituters =}"
