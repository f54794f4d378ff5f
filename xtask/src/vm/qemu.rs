//! QEMU under TCG (this machine's /dev/kvm hangs stock kernels): the guest's console is read
//! line by line, echoed live and kept in a log; QEMU is killed when the run times out, on
//! ctrl-c (SIGINT/SIGTERM set a flag the loop checks) and whenever the guard is dropped.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM stop the run at the next line or tick; the guard then kills QEMU.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub fn interrupted() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// A VM to boot.
pub struct Vm<'a> {
    pub kernel: &'a Path,
    pub initramfs: &'a Path,
    pub memory_mib: u32,
    pub cpus: u32,
}

impl Vm<'_> {
    fn command(&self) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-accel", "tcg,thread=multi", "-cpu", "max"])
            .args(["-smp", &self.cpus.to_string()])
            .args(["-m", &self.memory_mib.to_string()])
            .args(["-nodefaults", "-no-user-config", "-no-reboot"])
            .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
            .args(["-rtc", "base=utc"])
            .arg("-kernel")
            .arg(self.kernel)
            .arg("-initrd")
            .arg(self.initramfs)
            .args([
                "-append",
                "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=3",
            ])
            .args([
                "-virtfs",
                "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
            ]);
        c
    }
}

/// QEMU, killed (SIGKILL) and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// `on_line` said the run is over (the result marker was seen).
    Done,
    /// QEMU exited (powered off or crashed) before that.
    Exited(String),
    TimedOut,
    Interrupted,
}

enum Msg {
    Line(Vec<u8>),
    Eof,
}

fn reader(mut r: impl Read + Send + 'static, tx: mpsc::Sender<Msg>) {
    std::thread::spawn(move || {
        let mut br = BufReader::new(&mut r);
        // Bounded by QEMU's lifetime: read_until returns 0 at EOF, when QEMU exits or is killed.
        loop {
            let mut line = Vec::new();
            match br.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(Msg::Line(line)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Msg::Eof);
    });
}

/// Boots `vm` and feeds each console line (without its line ending) to `on_line` with the time
/// since QEMU started, echoing it to stdout and appending it to `log`, until `on_line` returns
/// true, QEMU exits, `timeout` passes or the user interrupts. QEMU is gone when this returns.
pub fn run(
    vm: &Vm,
    log: &Path,
    timeout: Duration,
    mut on_line: impl FnMut(&str, Duration) -> bool,
) -> Result<End> {
    let mut log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = vm.command();
    writeln!(log_file, "# {cmd:?}")?;
    // Its own process group: a ctrl-c at the terminal reaches xtask only, which then kills it.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = Guard(cmd.spawn().context("starting qemu-system-x86_64")?);
    let (tx, rx) = mpsc::channel();
    reader(child.0.stdout.take().context("qemu stdout")?, tx.clone());
    reader(child.0.stderr.take().context("qemu stderr")?, tx);
    let deadline = start + timeout;
    let mut eofs = 0;
    let mut stdout = std::io::stdout();
    let end = loop {
        if interrupted() {
            break End::Interrupted;
        }
        let now = Instant::now();
        if now >= deadline {
            break End::TimedOut;
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_millis(200))) {
            Ok(Msg::Line(bytes)) => {
                let _ = log_file.write_all(&bytes);
                let text = String::from_utf8_lossy(&bytes);
                let line = text.trim_end_matches(['\n', '\r']);
                let _ = writeln!(stdout, "{line}");
                if on_line(line, start.elapsed()) {
                    break End::Done;
                }
            }
            Ok(Msg::Eof) => {
                eofs += 1;
                if eofs == 2 {
                    let status = child.0.wait()?;
                    break End::Exited(status.to_string());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.0.wait()?;
                break End::Exited(status.to_string());
            }
        }
    };
    if end == End::Done {
        // The guest powers off right after the marker: give it a moment, then the guard kills.
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && matches!(child.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = log_file.flush();
    drop(child);
    Ok(end)
}

/// Fails early with a clear message when QEMU is not there.
pub fn check_installed() -> Result<()> {
    let ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("qemu-system-x86_64 does not run (Debian package qemu-system-x86)");
    }
    Ok(())
}
