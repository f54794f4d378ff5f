//! Which modules of the guest kernel's own tree the initramfs carries, in load order: the
//! closure of what the guest needs under modules.dep (written by `depmod -b`), less what is
//! built in. xz-compressed modules (6.12) are decompressed on the host, so the guest only needs
//! busybox `insmod`.

use std::{collections::HashMap, fs, path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

use super::kernels::Kernel;

/// Without these the guest cannot see the host's root: a missing one is an error.
const REQUIRED: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];
/// What the tests use: veth pairs for their network namespaces, socket diagnostics for
/// SOCK_DESTROY (killing suspended sessions), the clsact qdisc and BPF classifiers for the SYN
/// check on veths, nftables for the metrics-port rule of docs/operations.md; a missing one is
/// reported and skipped. (On a host the kernel loads these itself through modprobe; the guest
/// has no modprobe.)
const WANTED: &[&str] = &[
    "veth",
    "inet_diag",
    "tcp_diag",
    "udp_diag",
    "sch_ingress",
    "cls_bpf",
    // libcrc32c (nf_tables') finds its crc32c through the crypto API, a dependency modules.dep
    // does not list.
    "crc32c_generic",
    "nf_tables",
    "nft_reject_inet",
];

/// A module to load: its name and its (uncompressed) contents.
pub struct Module {
    pub name: String,
    pub bytes: Vec<u8>,
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The modules to load in the guest, dependencies first.
pub fn load_order(k: &Kernel) -> Result<Vec<Module>> {
    let dir = k.modules();
    let dep = fs::read_to_string(dir.join("modules.dep"))
        .with_context(|| format!("reading {}/modules.dep", dir.display()))?;
    let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin.lines().map(module_name).collect();
    // name → (path, dependencies as names)
    let mut table: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in dep.lines() {
        let Some((path, deps)) = line.split_once(':') else {
            continue;
        };
        let deps = deps.split_whitespace().map(module_name).collect();
        table.insert(module_name(path), (path.to_string(), deps));
    }
    let mut order: Vec<String> = Vec::new();
    for (names, required) in [(REQUIRED, true), (WANTED, false)] {
        for name in names {
            if builtin.iter().any(|b| b == name) {
                continue;
            }
            if !table.contains_key(*name) {
                if required {
                    bail!(
                        "{} has neither a {name} module nor a built-in one",
                        k.package
                    );
                }
                eprintln!(
                    "vm-test: {} has no {name} module (tests that need it will fail)",
                    k.package
                );
                continue;
            }
            visit(name, &table, &mut order, 0)?;
        }
    }
    order
        .into_iter()
        .map(|name| {
            let path = dir.join(&table[&name].0);
            Ok(Module {
                bytes: read_module(&path)?,
                name,
            })
        })
        .collect()
}

/// Depth-first: dependencies before the module. modules.dep lists every dependency of a
/// module (transitively), so the depth stays small; it is bounded anyway.
fn visit(
    name: &str,
    table: &HashMap<String, (String, Vec<String>)>,
    order: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    if order.iter().any(|n| n == name) {
        return Ok(());
    }
    if depth > 32 {
        bail!("module dependencies of {name} nest deeper than 32");
    }
    let (_, deps) = table
        .get(name)
        .with_context(|| format!("modules.dep names {name} but has no entry for it"))?;
    for d in deps {
        visit(d, table, order, depth + 1)?;
    }
    order.push(name.to_string());
    Ok(())
}

fn read_module(path: &PathBuf) -> Result<Vec<u8>> {
    let name = path.display().to_string();
    if name.ends_with(".ko") {
        return fs::read(path).with_context(|| format!("reading {name}"));
    }
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else if name.ends_with(".ko.gz") {
        "gzip"
    } else {
        bail!("{name}: unknown module compression");
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} -dc {name}"))?;
    if !out.status.success() {
        bail!(
            "{tool} -dc {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_module_paths() {
        assert_eq!(module_name("kernel/fs/9p/9p.ko"), "9p");
        assert_eq!(
            module_name("kernel/net/9p/9pnet_virtio.ko.xz"),
            "9pnet_virtio"
        );
        assert_eq!(
            module_name("kernel/drivers/virtio/virtio-pci.ko"),
            "virtio_pci"
        );
    }

    #[test]
    fn dependencies_come_first() {
        let mut table = HashMap::new();
        table.insert(
            "9p".to_string(),
            ("a".into(), vec!["9pnet".into(), "netfs".into()]),
        );
        table.insert("9pnet".to_string(), ("b".into(), vec![]));
        table.insert("netfs".to_string(), ("c".into(), vec!["fscache".into()]));
        table.insert("fscache".to_string(), ("d".into(), vec![]));
        let mut order = Vec::new();
        visit("9p", &table, &mut order, 0).unwrap();
        visit("9pnet", &table, &mut order, 0).unwrap();
        assert_eq!(order, ["9pnet", "fscache", "netfs", "9p"]);
    }
}
