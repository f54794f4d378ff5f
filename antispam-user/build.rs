//! Builds the eBPF programs (crate antispam-ebpf) for the BPF target with aya-build and leaves
//! the object in OUT_DIR, where src/kernel.rs embeds it. Needs the nightly toolchain with
//! rust-src and bpf-linker on PATH: `cargo xtask setup` installs both.

use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../antispam-ebpf");
    let root = root.canonicalize().context("locating antispam-ebpf")?;
    println!("cargo:rerun-if-changed={}", root.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.toml").display()
    );
    let common = root.join("../antispam-common/src");
    println!("cargo:rerun-if-changed={}", common.display());
    if which_bpf_linker().is_none() {
        anyhow::bail!(
            "bpf-linker is not on PATH: run `cargo xtask setup` once (it installs bpf-linker, \
             the nightly rust-src component and the test tools), then build again"
        );
    }
    let root_dir = root.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "antispam-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}
