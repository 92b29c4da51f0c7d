#!/usr/bin/env bash
# Builds the Debian package with packaging/build-deb.sh and checks what it contains: the three
# binaries, the systemd unit, the conffile, the completions, the man pages, the control fields
# and the maintainer scripts. Installs cargo-deb (crates.io) when it is missing.
# Quiet on success (one line); on failure, says what is wrong (and shows the build log).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log="$work/build.log"
problems=()
fail() {
    echo "check-deb: FAILED: $*" >&2
    exit 1
}
missing() { problems+=("$*"); }

if ! cargo deb --version >/dev/null 2>&1; then
    cargo install cargo-deb --locked >"$log" 2>&1 || {
        cat "$log" >&2
        fail "cannot install cargo-deb (cargo install cargo-deb --locked)"
    }
fi
command -v dpkg-deb >/dev/null || fail "dpkg-deb not found (it comes with dpkg)"

packaging/build-deb.sh >"$log" 2>&1 || {
    cat "$log" >&2
    fail "packaging/build-deb.sh failed (its output is above)"
}
deb="$(tail -n 1 "$log")"
[[ "$deb" == *.deb && -f "$deb" ]] || {
    cat "$log" >&2
    fail "build-deb.sh did not end with the path of a .deb (its output is above)"
}

# --- contents (dpkg-deb -c): "mode owner/group size date time ./path"
contents="$(dpkg-deb -c "$deb")" || fail "dpkg-deb -c cannot read $deb"
has() { # has PATH [MODE]: the package holds PATH (with MODE, e.g. -rwxr-xr-x)
    local line
    line="$(awk -v p="./$1" '$6 == p' <<<"$contents")"
    if [[ -z "$line" ]]; then
        missing "no /$1 in the package"
    elif [[ -n "${2:-}" && "$line" != "$2 "* ]]; then
        missing "/$1 has mode ${line%% *}, expected $2"
    fi
}
bins=(ldlm-server ldlm-lock ldlm-bench)
for bin in "${bins[@]}"; do
    has "usr/bin/$bin" -rwxr-xr-x
    has "usr/share/bash-completion/completions/$bin" -rw-r--r--
    has "usr/share/zsh/vendor-completions/_$bin" -rw-r--r--
    has "usr/share/fish/vendor_completions.d/$bin.fish" -rw-r--r--
    has "usr/share/man/man1/$bin.1.gz" -rw-r--r--
done
has usr/share/man/man1/ldlm-lock-list.1.gz
has usr/share/man/man1/ldlm-lock-unlock.1.gz
has usr/lib/systemd/system/ldlm-server.service -rw-r--r--
has etc/ldlm/config.yaml -rw-r--r--
has usr/share/doc/ldlm/copyright
if grep -q "ldlm-completions" <<<"$contents"; then
    missing "the build helper ldlm-completions is packaged"
fi

# --- control fields and scripts (dpkg-deb -I / -f). Outputs are captured before they are
# searched: `cmd | grep -q` can fail under pipefail when grep exits first (SIGPIPE).
[[ "$(dpkg-deb -f "$deb" Package)" == ldlm ]] || missing "Package is not ldlm"
depends="$(dpkg-deb -f "$deb" Depends)"
[[ "$depends" == *adduser* && "$depends" == *libc6* ]] ||
    missing "Depends ($depends) lacks adduser or libc6"
control_has() { # control_has FILE TEXT WHAT
    local text
    text="$(dpkg-deb -I "$deb" "$1" 2>/dev/null)" || true
    [[ "$text" == *"$2"* ]] || missing "$3"
}
control_has conffiles /etc/ldlm/config.yaml "/etc/ldlm/config.yaml is not a conffile"
control_has postinst "adduser --system" "postinst does not create the ldlm user"
control_has postinst "deb-systemd-helper enable ldlm-server.service" \
    "postinst does not enable ldlm-server.service"
control_has postinst "deb-systemd-invoke" "postinst does not start ldlm-server.service"
control_has prerm "deb-systemd-invoke stop" "prerm does not stop ldlm-server.service"
control_has postrm "deb-systemd-helper purge" "postrm does not purge the unit's state"
for script in postinst prerm postrm; do
    if ! dpkg-deb -I "$deb" "$script" >"$work/$script" 2>/dev/null ||
        ! sh -n "$work/$script"; then
        missing "the $script script is missing or not valid sh"
    fi
done

# --- the files themselves
dpkg-deb -x "$deb" "$work/root" || fail "dpkg-deb -x cannot extract $deb"
x="$work/root"
unit="$x/usr/lib/systemd/system/ldlm-server.service"
if [[ -f "$unit" ]]; then
    for setting in "ExecStart=/usr/bin/ldlm-server -c /etc/ldlm/config.yaml" User=ldlm \
        StateDirectory=ldlm RuntimeDirectory=ldlm NoNewPrivileges=yes ProtectSystem=strict \
        ProtectHome=yes PrivateTmp=yes; do
        grep -qxF "$setting" "$unit" || missing "the unit lacks $setting"
    done
    # systemd's own parser, where there is one: unknown keys, bad values (pointed at the
    # extracted binary, since /usr/bin/ldlm-server is not installed here).
    if command -v systemd-analyze >/dev/null; then
        sed "s|/usr/bin/ldlm-server|$x/usr/bin/ldlm-server|" "$unit" >"$work/ldlm-server.service"
        if ! verify="$(systemd-analyze verify --man=no "$work/ldlm-server.service" 2>&1)" ||
            [[ -n "$verify" ]]; then
            missing "systemd-analyze verify: $verify"
        fi
    fi
fi
cmp -s "$x/etc/ldlm/config.yaml" packaging/config.yaml ||
    missing "/etc/ldlm/config.yaml is not packaging/config.yaml"
if [[ -x "$x/usr/bin/ldlm-server" ]]; then
    out="$("$x/usr/bin/ldlm-server" --version 2>&1)" || true
    [[ "$out" == "Version: "* ]] || missing "the packaged ldlm-server does not run: $out"
    out="$("$x/usr/bin/ldlm-lock" --help 2>&1)" || true
    [[ "$out" == *unlock* ]] || missing "the packaged ldlm-lock does not run: $out"
    out="$("$x/usr/bin/ldlm-bench" --help 2>&1)" || true
    [[ "$out" == *--workload* ]] || missing "the packaged ldlm-bench does not run: $out"
fi
for page in "$x"/usr/share/man/man1/*.gz; do
    if [[ -f "$page" ]] && ! gzip -t "$page"; then
        missing "${page#"$x"} is not valid gzip"
    fi
done
if [[ -f "$x/usr/share/bash-completion/completions/ldlm-server" ]]; then
    grep -q -- --default_lock_timeout "$x/usr/share/bash-completion/completions/ldlm-server" ||
        missing "the ldlm-server bash completion lacks --default_lock_timeout"
    for script in "$x"/usr/share/bash-completion/completions/*; do
        bash -n "$script" || missing "${script#"$x"} is not valid bash"
    done
fi

if ((${#problems[@]})); then
    printf 'check-deb: %s\n' "${problems[@]}" >&2
    echo "check-deb: contents of $deb:" >&2
    printf '%s\n' "$contents" >&2
    fail "${#problems[@]} problem(s) in $deb"
fi
echo "check-deb: ok: ${deb#"$root"/} ($(wc -l <<<"$contents") entries)"
