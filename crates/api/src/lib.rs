//! The gRPC contract of package `dossier.v1`, generated from `proto/` at build time.
//!
//! Only generated code lives here. Conversions between these messages and domain types are
//! written by hand in each service (no prost derives on domain types).

#![allow(clippy::all, missing_debug_implementations)]

pub mod dossier {
    pub mod v1 {
        tonic::include_proto!("dossier.v1");
    }
}

pub use dossier::v1;

/// The encoded `FileDescriptorSet` of every proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/dossier_descriptor.bin"));
