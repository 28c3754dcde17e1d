//! Records the compiler version for run provenance (`runs.rustc_version` in the store).

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=REPRO_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-changed=build.rs");
}
