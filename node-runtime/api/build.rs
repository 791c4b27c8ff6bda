fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/rauha.proto");
    // Our codec: a body that does not decode is INVALID_ARGUMENT (codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::codec::Proto")
        .compile_protos(&["proto/rauha.proto"], &["proto"])?;
    Ok(())
}
