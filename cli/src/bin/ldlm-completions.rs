//! `ldlm-completions OUT_DIR [MAN_DIR]`: writes the shell completions and man pages of
//! `ldlm-server`, `ldlm-lock` and `ldlm-bench`, generated from the clap `Command`s the binaries
//! really parse with (so they cannot drift from the options). A packaging helper
//! (`packaging/build-deb.sh`), not installed itself.
//!
//! Files written (directories are created):
//!
//! - `OUT_DIR/bash/<bin>`: for `/usr/share/bash-completion/completions/<bin>`;
//! - `OUT_DIR/zsh/_<bin>`: for `/usr/share/zsh/vendor-completions/_<bin>`;
//! - `OUT_DIR/fish/<bin>.fish`: for `/usr/share/fish/vendor_completions.d/<bin>.fish`;
//! - `MAN_DIR/<bin>.1`, and `ldlm-lock-list.1`, `ldlm-lock-unlock.1` for the subcommands
//!   (`MAN_DIR` defaults to `OUT_DIR/man`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Command, CommandFactory as _, ValueHint};
use clap_complete::Shell;

/// The server's options that name files: completed as paths.
const SERVER_PATH_OPTIONS: &[&str] = &[
    "config_file",
    "state_file",
    "ipc_socket_file",
    "tls_cert",
    "tls_key",
    "client_ca",
];

const USAGE: &str = "usage: ldlm-completions OUT_DIR [MAN_DIR]\n\nWrites bash, zsh and fish \
                     completions of ldlm-server, ldlm-lock and ldlm-bench to OUT_DIR/{bash,zsh,\
                     fish} and their man pages to MAN_DIR (default OUT_DIR/man).";

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (out_dir, man_dir) = match args.as_slice() {
        [out] => (PathBuf::from(out), PathBuf::from(out).join("man")),
        [out, man] => (PathBuf::from(out), PathBuf::from(man)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match write_all(&out_dir, &man_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ldlm-completions: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The three commands, as their binaries parse them (plus value hints for completion and the
/// version for the man pages' footer).
fn commands() -> Vec<Command> {
    let mut server = ldlm_cli::config::command().version(env!("CARGO_PKG_VERSION"));
    for name in SERVER_PATH_OPTIONS {
        server = server.mut_arg(*name, |arg| arg.value_hint(ValueHint::FilePath));
    }
    let lock =
        ldlm_cli::admin::command().mut_arg("socket", |arg| arg.value_hint(ValueHint::FilePath));
    let bench = ldlm_bench::Args::command();
    vec![server, lock, bench]
}

fn write_all(out_dir: &Path, man_dir: &Path) -> anyhow::Result<()> {
    for cmd in commands() {
        let bin = cmd.get_name().to_owned();
        for (shell, dir, file) in [
            (Shell::Bash, "bash", bin.clone()),
            (Shell::Zsh, "zsh", format!("_{bin}")),
            (Shell::Fish, "fish", format!("{bin}.fish")),
        ] {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), &bin, &mut text);
            write_file(&out_dir.join(dir).join(file), &text)?;
        }
        // No `help` subcommand in the pages (clap_mangen's generate_to does the same).
        let mut cmd = cmd.disable_help_subcommand(true);
        cmd.build();
        write_man_pages(&cmd, man_dir)?;
    }
    Ok(())
}

/// The page of `cmd` and, recursively, of its visible subcommands (`ldlm-lock-list.1`, …).
fn write_man_pages(cmd: &Command, man_dir: &Path) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_man_pages(sub, man_dir)?;
    }
    let man = clap_mangen::Man::new(cmd.clone()).manual("LDLM");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut page)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut page)?;
    }
    if cmd.get_after_help().is_some() || cmd.get_after_long_help().is_some() {
        // clap_mangen calls this section EXTRA; NOTES is the man-pages(7) name.
        let mut extra = Vec::new();
        man.render_extra_section(&mut extra)?;
        let extra = String::from_utf8_lossy(&extra).replacen(".SH EXTRA", ".SH NOTES", 1);
        page.extend_from_slice(extra.as_bytes());
    }
    let see_also = ["ldlm-server", "ldlm-lock", "ldlm-bench"]
        .into_iter()
        .filter(|name| *name != cmd.get_name())
        .map(|name| format!("\\fB{name}\\fR(1)"))
        .collect::<Vec<_>>()
        .join(", ");
    writeln!(page, ".SH \"SEE ALSO\"\n{see_also}")?;
    if cmd.get_version().is_some() {
        man.render_version_section(&mut page)?;
    }
    write_file(&man_dir.join(man.get_filename()), &page)
}

fn write_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}
