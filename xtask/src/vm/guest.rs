//! What the guest runs: a busybox initramfs whose /init mounts the host's root (9p, read-only)
//! with writable tmpfs and overlays where tests write, and the kernel file systems the agent
//! needs, then switches root to it to run the test binaries (a script xtask writes under
//! target/vm/), prints a result marker on the console and powers off.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use super::modules::Module;

/// Console markers the host parses.
pub const INIT: &str = "ANTISPAM-VM-INIT";
pub const BOOTED: &str = "ANTISPAM-VM-BOOTED";
pub const BEGIN: &str = "ANTISPAM-VM-BEGIN";
pub const END: &str = "ANTISPAM-VM-END";
pub const RESULT: &str = "ANTISPAM-VM-RESULT";
pub const ERROR: &str = "ANTISPAM-VM-ERROR";

/// Where the host's root appears in the initramfs before switch_root.
const HOST: &str = "/host";
/// busybox-static's binary on the host.
const BUSYBOX: &str = "/bin/busybox";

/// One test binary to run in the guest.
#[derive(Clone, Debug)]
pub struct TestBinary {
    pub name: String,
    pub path: PathBuf,
}

/// Everything the guest's test run needs.
pub struct Plan<'a> {
    pub binaries: &'a [TestBinary],
    pub filters: &'a [String],
    pub agent: &'a Path,
    /// Working directory of the tests (cargo runs them in their package's directory).
    pub workdir: &'a Path,
    /// Upper bound for one test binary inside the guest.
    pub per_binary_secs: u64,
    /// The host's clock when the run was planned, in case the guest has no RTC time.
    pub epoch: u64,
    /// Variables of the host's passed on as they are: RUST_LOG (for the agents the tests
    /// start) and RUST_TEST_NOCAPTURE (the tests' own output), where set.
    pub passed_env: Vec<(&'static str, String)>,
}

/// `'…'` for /bin/sh.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn quote_path(p: &Path) -> String {
    quote(&p.display().to_string())
}

/// The script the guest runs in the host's root (with the host's /bin/sh): one test binary at
/// a time, each bounded by `timeout`, markers before and after each; exits non-zero if any
/// failed.
pub fn run_script(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "#!/bin/sh\n\
         # Written by cargo xtask vm-test; runs inside the VM, in the host's root (read-only 9p).\n\
         export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         export HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 TERM=dumb\n\
         export CI=true RUST_BACKTRACE=1 ANTISPAM_BIN={agent}\n\
         # Tests may widen their timing bounds under emulation (never skip on it).\n\
         export ANTISPAM_VM=tcg\n\
         # The RTC gives the guest the host's time; should it not, the host's clock at start.\n\
         [ \"$(date +%s)\" -ge {epoch} ] || date -u -s @{epoch} >/dev/null\n\
         cd {workdir} || exit 125\n\
         echo \"{BOOTED} kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)s \
         date=$(date -u +%Y-%m-%dT%H:%M:%SZ) lsm=$(cat /sys/kernel/security/lsm)\"\n\
         rc=0\n",
        agent = quote_path(plan.agent),
        epoch = plan.epoch,
        workdir = quote_path(plan.workdir),
    );
    for (name, value) in &plan.passed_env {
        let _ = writeln!(s, "export {name}={}", quote(value));
    }
    let filters: String = plan
        .filters
        .iter()
        .map(|f| format!(" {}", quote(f)))
        .collect();
    for b in plan.binaries {
        let _ = write!(
            s,
            "echo \"{BEGIN} {name}\"\n\
             timeout -k 10 {secs} {bin} --test-threads=1{filters} </dev/null 2>&1\n\
             r=$?\n\
             echo \"{END} {name} rc=$r\"\n\
             [ $r -eq 0 ] || rc=1\n",
            name = b.name,
            secs = plan.per_binary_secs,
            bin = quote_path(&b.path),
        );
    }
    s.push_str("exit $rc\n");
    s
}

/// The initramfs /init (busybox sh). `run_script` is the path of the run script on the host,
/// which the guest sees at the same path once the host's root is its root.
pub fn init_script(modules: &[Module], run_script: &Path) -> String {
    let mods: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
    format!(
        r#"#!/bin/busybox sh
# Written by cargo xtask vm-test: the init of the test VM's initramfs.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
fail() {{ echo "{ERROR} $*"; echo "{RESULT} rc=125"; poweroff -f; sleep 5; echo o >/proc/sysrq-trigger; }}
echo "{INIT} kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)s"
for m in {mods}; do
  insmod /mods/$m.ko 2>/tmp/insmod.err || grep -q 'File exists' /tmp/insmod.err || echo "insmod $m: $(cat /tmp/insmod.err)"
done
echo "modules: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose host {HOST} || fail "mounting the host's root over 9p"
# Writable layers over the read-only host: tmpfs for scratch, overlays where the host's
# contents must stay visible (/var/spool/postfix, /root).
mount -t tmpfs -o mode=755 layers /layers
for d in var root; do
  mkdir -p /layers/$d/upper /layers/$d/work
  mount -t overlay -o lowerdir={HOST}/$d,upperdir=/layers/$d/upper,workdir=/layers/$d/work overlay {HOST}/$d || fail "overlay on /$d"
done
mount -t tmpfs -o mode=1777 tmp {HOST}/tmp || fail "tmpfs on /tmp"
mount -t tmpfs -o mode=755 run {HOST}/run || fail "tmpfs on /run"
mount -t proc proc {HOST}/proc
mount -t sysfs sysfs {HOST}/sys
mount -t devtmpfs devtmpfs {HOST}/dev
mkdir -p {HOST}/dev/pts {HOST}/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts {HOST}/dev/pts
mount -t tmpfs -o mode=1777 shm {HOST}/dev/shm
mount -t cgroup2 cgroup2 {HOST}/sys/fs/cgroup || fail "cgroup2"
mount -t bpf -o mode=700 bpf {HOST}/sys/fs/bpf || fail "bpffs"
mount -t securityfs securityfs {HOST}/sys/kernel/security
mount -t debugfs debugfs {HOST}/sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs {HOST}/sys/kernel/tracing 2>/dev/null
hostname antispam-vm
ip link set lo up || fail "bringing lo up"
# switch_root, not chroot: the host's root becomes the root of the mount namespace, so a test
# that joins a mount namespace (setns resets the root to the namespace's) lands in it too.
# The host's shell is then PID 1 (it reaps orphans while it waits); busybox-static is on the
# host too (vm-test installs it).
exec switch_root {HOST} /bin/sh -c {tail}
"#,
        mods = mods.join(" "),
        tail = quote(&format!(
            "/bin/sh {script}; echo \"{RESULT} rc=$?\"; /bin/busybox poweroff -f; sleep 5; \
             echo o >/proc/sysrq-trigger",
            script = quote_path(run_script)
        )),
    )
}

/// A newc cpio archive (the initramfs format), uncompressed.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | mode, (0, 0), data);
    }

    pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, (major, minor), &[]);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

/// Writes the initramfs for one run: busybox, the modules and /init.
pub fn initramfs(path: &Path, modules: &[Module], run_script: &Path) -> Result<()> {
    let busybox = fs::read(BUSYBOX)
        .with_context(|| format!("reading {BUSYBOX} (Debian's busybox-static)"))?;
    let mut c = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "tmp", "mods", "layers", "host"] {
        c.dir(d);
    }
    c.char_dev("dev/console", 5, 1);
    c.file("bin/busybox", 0o755, &busybox);
    for m in modules {
        c.file(&format!("mods/{}.ko", m.name), 0o644, &m.bytes);
    }
    c.file("init", 0o755, init_script(modules, run_script).as_bytes());
    fs::write(path, c.finish()).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        let a = c.finish();
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        let s = String::from_utf8_lossy(&a);
        assert!(s.contains("TRAILER!!!"));
        // The file's mode and size fields.
        assert!(s.contains(&format!("{:08x}", 0o100_755)));
        assert!(s.contains(&format!("{:08x}", 10)));
    }

    #[test]
    fn run_script_quotes_and_bounds_each_binary() {
        let bins = [TestBinary {
            name: "limits".into(),
            path: "/w/target/release/deps/limits-0123".into(),
        }];
        let filters = ["it's".to_string()];
        let s = run_script(&Plan {
            binaries: &bins,
            filters: &filters,
            agent: Path::new("/w/target/release/antispam"),
            workdir: Path::new("/w/tests"),
            per_binary_secs: 600,
            epoch: 1_700_000_000,
            passed_env: vec![("RUST_LOG", "debug".into())],
        });
        assert!(s.contains(
            "timeout -k 10 600 '/w/target/release/deps/limits-0123' --test-threads=1 'it'\\''s'"
        ));
        assert!(s.contains("ANTISPAM_BIN='/w/target/release/antispam'"));
        assert!(s.contains("export RUST_LOG='debug'"));
        assert!(s.contains("echo \"ANTISPAM-VM-END limits rc=$r\""));
    }
}
