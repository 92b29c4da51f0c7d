//! Generates the Rust code for `ldlm.proto` without a system `protoc`.
//!
//! `protox` (a pure-Rust protobuf compiler) turns the .proto into a `FileDescriptorSet`, which
//! `tonic-prost-build` turns into prost messages plus tonic server and client stubs
//! (`$OUT_DIR/ldlm.rs`). The encoded descriptor set is also written to
//! `$OUT_DIR/ldlm_descriptor.bin` for a gRPC reflection service.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn Error>> {
    // Neither protox nor tonic-prost-build prints this for `compile_fds`: without it cargo would
    // rerun this script on every change anywhere in the package (or never, for the .proto).
    println!("cargo:rerun-if-changed=ldlm.proto");
    println!("cargo:rerun-if-changed=build.rs");

    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let fds = protox::compile(["ldlm.proto"], [&manifest_dir])?;
    fs::write(out_dir.join("ldlm_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
