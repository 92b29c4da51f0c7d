//! `ldlm-lock`: lists and unlocks the locks of a running server over its IPC socket. All logic
//! lives in the library (`ldlm_cli::admin`).

fn main() -> std::process::ExitCode {
    ldlm_cli::admin::main()
}
