fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/rauha.proto");
    tonic_prost_build::configure().compile_protos(&["proto/rauha.proto"], &["proto"])?;
    Ok(())
}
