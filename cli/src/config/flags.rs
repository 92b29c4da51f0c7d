//! The `ldlm-server` command line: the clap [`Command`] built from the option table. Flags
//! stay text here (clap only splits the arguments); the loader parses them like values from the
//! environment or a file, so every source accepts the same values and gives the same errors.

use clap::{Arg, ArgAction, ColorChoice, Command};

use super::options::{CONFIG_FILE, Kind, OPTIONS, VERSION};
use super::{ServerConfig, env_var_name};

/// An option's help: its text, its default (`""` when empty, so an empty default is visible)
/// and its environment variable.
fn help_line(help: &str, default: &str, name: &str) -> String {
    let default = if default.is_empty() {
        "\"\"".to_owned()
    } else {
        default.to_owned()
    };
    format!("{help} [default: {default}] [env: {}]", env_var_name(name))
}

fn flag_arg(name: &'static str, short: Option<char>, kind: Kind, help: String) -> Arg {
    let mut arg = Arg::new(name)
        .long(name)
        .value_name(kind.value_name())
        .value_parser(clap::value_parser!(String))
        .action(ArgAction::Set)
        .help(help);
    if let Some(short) = short {
        arg = arg.short(short);
    }
    if kind == Kind::Bool {
        // `--flag` alone is true; a value must be attached: `--flag=false`.
        arg.num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
    } else {
        // Like Go's flag packages, the next argument is the value even if it starts with `-`.
        arg.allow_hyphen_values(true)
    }
}

/// The `ldlm-server` command line as a [`clap::Command`]: every option of the table with its
/// short flag, value name and help (default and environment variable included).
/// [`load_from`](super::load_from) parses with it and `--help` prints it; `ldlm-completions`
/// generates the shell completions and the man page from it.
pub fn command() -> Command {
    let defaults = ServerConfig::defaults();
    let mut cmd = Command::new("ldlm-server")
        .bin_name("ldlm-server")
        .about("LDLM lock server: named locks over gRPC, REST and a local admin socket")
        .color(ColorChoice::Never)
        .term_width(100)
        .args_override_self(true)
        .disable_version_flag(true)
        .after_help(
            "Each option can also be set with its environment variable (LDLM_<NAME>, empty = \
             unset) and as a key <name> in the config file (.json, .yaml or .yml). Precedence: \
             default < config file < environment < command line. Durations use Go syntax \
             (300ms, 10s, 1h30m).",
        )
        .arg(flag_arg(
            CONFIG_FILE,
            Some('c'),
            Kind::Text,
            help_line("Config file (.json, .yaml or .yml)", "", CONFIG_FILE),
        ))
        .arg(flag_arg(
            VERSION,
            None,
            Kind::Bool,
            help_line("Print version information and exit", "false", VERSION),
        ));
    for spec in OPTIONS {
        let help = help_line(spec.help, &spec.help_default(&defaults), spec.name);
        cmd = cmd.arg(flag_arg(spec.name, spec.short, spec.kind, help));
    }
    cmd
}
