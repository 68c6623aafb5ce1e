//! Compiles `proto/` into Rust with no system `protoc`: protox parses the files into a
//! descriptor set, tonic-prost-build generates messages, client and server from it, and the
//! encoded descriptor set is kept in OUT_DIR for the daemon's reflection service.

use std::path::PathBuf;

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = ["proto/minder/v1/supervisor.proto"];
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("minder_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
