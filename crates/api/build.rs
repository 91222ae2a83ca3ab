//! Compiles `proto/` with protox (a protobuf compiler in Rust), so no system `protoc` is needed,
//! and keeps the encoded descriptor set for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("dossier/v1"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
    files.sort();
    let fds = protox::compile(&files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("dossier_descriptor.bin"), fds.encode_to_vec())?;
    // The well-known types come from pbjson-types (prost's own carry no serde), so every message
    // has the standard proto3 JSON mapping (`Serialize`/`Deserialize`) generated below.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds_with_config(fds.clone(), {
            // Not prost-types' (the default, which this switches off): the extern path above.
            let mut config = tonic_prost_build::Config::new();
            config.compile_well_known_types();
            config
        })?;
    // The proto3 JSON mapping: lowerCamelCase names, enums by name, 64-bit integers as strings,
    // every field emitted (0, "", false and [] included) but an absent message or `optional`
    // field, which is left out.
    pbjson_build::Builder::new()
        .register_descriptors(&fds.encode_to_vec())?
        .extern_path(".google.protobuf", "::pbjson_types")
        .emit_fields()
        .build(&[".dossier.v1"])?;
    println!("cargo:rerun-if-changed={}", root.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    Ok(())
}
