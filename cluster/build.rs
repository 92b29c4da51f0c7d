//! Generates the peer service's Rust code from `proto/peer.proto` without a system `protoc`
//! (protox compiles it, tonic-prost-build writes the stubs), as the public proto does.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto/peer.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let fds = protox::compile(["peer.proto"], [manifest_dir.join("proto")])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
