//! Generates the plugin protocol's gRPC server code from `proto/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_client(false)
        .compile_protos(
            &["proto/tfplugin6.proto", "proto/go_plugin.proto"],
            &["proto"],
        )?;
    Ok(())
}
