//! Arbitrary bytes as a YAML and as a JSON config file through the real loader
//! (`ldlm_cli::config::load_from`, `--config_file <path>`, empty environment): an error or a
//! configuration, never a panic. A configuration that loads is valid: the engine accepts it.

#![no_main]

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::LazyLock;

use ldlm_cli::config::{Loaded, load_from};
use ldlm_engine::{Engine, Tick};
use libfuzzer_sys::fuzz_target;

/// One temporary directory for the whole run (removed at exit).
static DIR: LazyLock<tempfile::TempDir> =
    LazyLock::new(|| tempfile::tempdir().expect("temporary directory"));

fn path(extension: &str) -> PathBuf {
    DIR.path().join(format!("ldlm.{extension}"))
}

fn load(path: PathBuf) {
    let args: Vec<OsString> = vec!["ldlm-server".into(), "--config_file".into(), path.into()];
    match load_from(args, &|_| None) {
        Ok(Loaded::Run(config)) => {
            config
                .validate()
                .unwrap_or_else(|e| panic!("a loaded configuration is invalid: {e}"));
            let engine_config = ldlm_cli::server::engine_config(&config);
            if let Err(e) = Engine::new(engine_config, Tick::ZERO) {
                panic!("a loaded configuration is refused by the engine: {e:?}");
            }
        }
        Ok(Loaded::Help(_) | Loaded::Version(_)) => {}
        Err(e) => assert!(!e.message().is_empty(), "a config error has a message"),
    }
}

fuzz_target!(|data: &[u8]| {
    for extension in ["yaml", "json"] {
        let path = path(extension);
        std::fs::write(&path, data).expect("write the config file");
        load(path);
    }
});
