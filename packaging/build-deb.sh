#!/usr/bin/env bash
# Builds the Debian package: target/debian/ldlm_<version>-<revision>_<arch>.deb (its path is the
# last line printed). Needs cargo-deb (`cargo install cargo-deb --locked`; check-deb.sh installs
# it when missing). Extra arguments go to `cargo deb` (e.g. --deb-revision 2).
#
# 1. release build of ldlm-cli (ldlm-server, ldlm-lock, ldlm-completions) and ldlm-bench;
# 2. completions and man pages, generated from the binaries' clap Commands by ldlm-completions
#    into target/completions and target/man (the assets of [package.metadata.deb] in
#    cli/Cargo.toml point there);
# 3. `cargo deb -p ldlm-cli --no-build`: packages step 1 and 2's files with the systemd unit,
#    the default config and the maintainer scripts of packaging/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: cargo-deb is not installed: cargo install cargo-deb --locked" >&2
    exit 1
fi

cargo build --release --locked -p ldlm-cli -p ldlm-bench

# The real target directory (CARGO_TARGET_DIR or build.target-dir may move it); the generated
# files always go to <workspace>/target/{completions,man}, where the deb assets expect them.
target_dir="$(cargo metadata --format-version 1 --no-deps --locked |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
rm -rf target/completions target/man
"${target_dir:-target}/release/ldlm-completions" target/completions target/man

# cargo-deb warns about every asset under ../target/ that it "will not build": these are
# generated above on purpose, so that warning is dropped; everything else is shown.
out="$(cargo deb -p ldlm-cli --no-build "$@" 2>&1)" || {
    printf '%s\n' "$out" >&2
    exit 1
}
printf '%s\n' "$out" | grep -v "are detected as Cargo target dir" || true
