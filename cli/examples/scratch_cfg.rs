//! scratch
fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match ldlm_cli::config::load_from(args, &|k: &str| std::env::var(k).ok()) {
        Ok(ldlm_cli::config::Loaded::Help(h)) => print!("{h}"),
        Ok(ldlm_cli::config::Loaded::Version(h)) => print!("{h}"),
        Ok(ldlm_cli::config::Loaded::Run(c)) => println!("{c:#?}"),
        Err(e) => { eprintln!("ldlm-server: {e}"); std::process::exit(e.exit_code()) }
    }
}
