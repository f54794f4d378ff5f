//! `cargo xtask vm-test --systemd`: a guest whose PID 1 is the host's systemd, over the host's
//! root filesystem (9p, read-only, under a tmpfs overlay so the guest can write), running the
//! shipped `deploy/systemd/antispam.service` as an operator would install it (binary in
//! /usr/local/bin, policy in /etc/antispam). A test unit drives it with systemctl: start,
//! reload, a SIGHUP during start-up, stop (enforcement stays), start (takes over), a crash
//! (SIGKILL: restarted), and `systemd-analyze security`. Its results are printed in libtest's
//! format between the usual markers, so the report reads them as one test binary, `systemd`.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result};

use super::{
    guest::{self, Cpio, BEGIN, BOOTED, END, ERROR, INIT, RESULT},
    modules::Module,
};

/// The console line with the unit's exposure score (`systemd-analyze security`).
pub const SECURITY: &str = "ANTISPAM-VM-SECURITY";

/// The policy the guest's agent runs: SMTP is port 25, one attempt per UID (burst 1) until the
/// reload raises the burst to 2.
const POLICY: &str = "ports = [25]\n[default]\nrate = \"1/hour\"\nburst = 1\n";
const POLICY_RELOADED: &str = "ports = [25]\n[default]\nrate = \"1/hour\"\nburst = 2\n";

/// The unit that runs the test script once systemd has booted the system far enough.
const TEST_UNIT: &str = "[Unit]\n\
Description=antispam: the VM test of the shipped systemd unit\n\
After=sysinit.target\n\
\n\
[Service]\n\
Type=simple\n\
ExecStart=/bin/sh /antispam-vm/systemd-test.sh\n\
StandardOutput=tty\n\
StandardError=tty\n\
TTYPath=/dev/ttyS0\n\
TTYReset=no\n\
TTYVHangup=no\n";

/// The guest's default target: the base system and the test, nothing of the host's services.
const TARGET: &str = "[Unit]\n\
Description=antispam VM test\n\
Requires=sysinit.target antispam-vm-test.service\n\
After=sysinit.target\n\
AllowIsolate=yes\n";

/// What the systemd guest needs from the host.
pub struct Plan<'a> {
    /// The agent, copied to /usr/local/bin/antispam in the guest.
    pub agent: &'a Path,
    /// deploy/systemd/antispam.service, installed unchanged.
    pub unit: &'a Path,
    /// Where the files for the guest are written (target/vm/systemd/), seen by the guest at the
    /// same path.
    pub dir: &'a Path,
    /// The host's clock when the run was planned, in case the guest has no RTC time.
    pub epoch: u64,
    /// The package test instead of the unit's: two builds of the .deb, the first installed,
    /// then upgraded to the second, then purged.
    pub debs: Option<(&'a Path, &'a Path)>,
}

/// Writes the guest's files into `plan.dir` and its initramfs to `initramfs`.
pub fn prepare(plan: &Plan, modules: &[Module], initramfs: &Path) -> Result<()> {
    fs::create_dir_all(plan.dir).with_context(|| format!("creating {}", plan.dir.display()))?;
    let files = [
        ("policy.toml", POLICY.to_string()),
        ("policy-reloaded.toml", POLICY_RELOADED.to_string()),
        ("antispam-vm-test.service", TEST_UNIT.to_string()),
        ("antispam-vm.target", TARGET.to_string()),
        (
            "systemd-test.sh",
            match plan.debs {
                None => test_script(plan.epoch),
                Some(_) => package_script(plan.epoch),
            },
        ),
    ];
    for (name, text) in files {
        let p = plan.dir.join(name);
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    let busybox = fs::read("/bin/busybox").context("reading /bin/busybox (busybox-static)")?;
    let mut c = Cpio::default();
    for d in [
        "bin", "dev", "proc", "sys", "tmp", "mods", "layers", "host", "newroot",
    ] {
        c.dir(d);
    }
    c.char_dev("dev/console", 5, 1);
    c.file("bin/busybox", 0o755, &busybox);
    for m in modules {
        c.file(&format!("mods/{}.ko", m.name), 0o644, &m.bytes);
    }
    c.file("init", 0o755, init_script(plan, modules).as_bytes());
    fs::write(initramfs, c.finish()).with_context(|| format!("writing {}", initramfs.display()))
}

/// A host path as the initramfs sees it, under /host, quoted.
fn q(p: &Path) -> String {
    guest::quote(&format!("/host{}", p.display()))
}

/// /init: the host's root read-only over 9p under a tmpfs overlay at /newroot, the agent, the
/// shipped unit, the policy and the test unit put in place as an operator would, then
/// `switch_root` to the host's systemd.
fn init_script(plan: &Plan, modules: &[Module]) -> String {
    let mods: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
    let d = |name: &str| q(&plan.dir.join(name));
    format!(
        r#"#!/bin/busybox sh
# Written by cargo xtask vm-test --systemd: the init of the systemd test VM's initramfs.
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
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose host /host || fail "mounting the host's root over 9p"
mount -t tmpfs -o mode=755 layers /layers
mkdir -p /layers/root/upper /layers/root/work
mount -t overlay -o lowerdir=/host,upperdir=/layers/root/upper,workdir=/layers/root/work overlay /newroot || fail "overlay on the host's root"
R=/newroot
mkdir -p $R/etc/systemd/system $R/antispam-vm
{install}cp {test_unit} {target} $R/etc/systemd/system/ || fail "copying the test unit"
cp {script} {reloaded} {policy} $R/antispam-vm/ || fail "copying the test script"
ln -sf antispam-vm.target $R/etc/systemd/system/default.target
# The host's marks of a container: systemd would take the VM for one and skip mounting the BPF
# filesystem, among other things.
rm -f $R/.dockerenv $R/run/.containerenv
# A container image's policy-rc.d (exit 101) would keep dpkg from starting services.
rm -f $R/usr/sbin/policy-rc.d
# The host's fstab names none of the guest's disks.
: > $R/etc/fstab
echo antispam-vm > $R/etc/hostname
for m in dev proc sys; do mount --move /$m $R/$m; done
exec switch_root $R /lib/systemd/systemd
"#,
        mods = mods.join(" "),
        install = match plan.debs {
            // Installed as docs/operations.md says: the binary, the policy, the unit as shipped.
            None => format!(
                "mkdir -p $R/usr/local/bin $R/etc/antispam\n\
                 cp {agent} $R/usr/local/bin/antispam || fail \"copying the agent\"\n\
                 cp {policy} $R/etc/antispam/policy.toml || fail \"copying the policy\"\n\
                 cp {unit} $R/etc/systemd/system/antispam.service || fail \"copying the unit\"\n",
                agent = q(plan.agent),
                policy = d("policy.toml"),
                unit = q(plan.unit),
            ),
            // The test script installs the package with dpkg.
            Some((first, second)) => format!(
                "cp {} $R/antispam-vm/antispam-first.deb || fail \"copying the first package\"\n\
                 cp {} $R/antispam-vm/antispam-second.deb || fail \"copying the second package\"\n",
                q(first),
                q(second)
            ),
        },
        policy = d("policy.toml"),
        test_unit = d("antispam-vm-test.service"),
        target = d("antispam-vm.target"),
        script = d("systemd-test.sh"),
        reloaded = d("policy-reloaded.toml"),
    )
}

/// The unit's test, run by antispam-vm-test.service. Every wait is bounded; each step prints a
/// libtest line; the guest powers off at the end.
fn test_script(epoch: u64) -> String {
    let steps = UNIT_STEPS.replace("{SECURITY}", SECURITY);
    format!("{}{steps}{}", prelude(epoch), epilogue())
}

/// The package's test: install (enabled, started, enforcing, the group, the files), logrotate,
/// upgrade (no gap: a key over its budget stays refused throughout), purge (nothing left).
fn package_script(epoch: u64) -> String {
    format!("{}{PACKAGE_STEPS}{}", prelude(epoch), epilogue())
}

/// The shell functions both tests use.
fn prelude(epoch: u64) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"#!/bin/sh
# Written by cargo xtask vm-test --systemd; runs in the VM as antispam-vm-test.service.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LANG=C.UTF-8 TERM=dumb
[ "$(date +%s)" -ge {epoch} ] || date -u -s @{epoch} >/dev/null
echo "{BOOTED} kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)s pid1=$(cat /proc/1/comm) $(systemctl --version | head -n1)"
echo "{BEGIN} systemd"
passed=0
failed=0

# A connect to 127.0.0.1:25 (nothing listens there) as UID $1: "closed" when the kernel
# answers (the connect was allowed), "refused" when antispam refused it (EPERM).
probe() {{
  out=$(timeout 15 setpriv --reuid "$1" --regid "$1" --clear-groups busybox nc -w 2 127.0.0.1 25 </dev/null 2>&1)
  case "$out" in
    *"not permitted"*) echo refused ;;
    *"refused"*) echo closed ;;
    *) echo "other($out)" ;;
  esac
}}

# UID $1 may make $2 attempts; the next is refused.
enforces() {{
  got=""
  i=0
  while [ $i -lt "$2" ]; do got="$got $(probe "$1")"; i=$((i + 1)); done
  got="$got $(probe "$1")"
  want=""
  i=0
  while [ $i -lt "$2" ]; do want="$want closed"; i=$((i + 1)); done
  want="$want refused"
  echo "    uid $1:$got (want:$want)"
  [ "$got" = "$want" ]
}}

prop() {{ systemctl show -p "$1" --value antispam; }}

# Until the unit is active, at most $1 seconds.
wait_active() {{
  i=0
  while [ $i -lt $(($1 * 10)) ]; do
    [ "$(systemctl is-active antispam)" = active ] && return 0
    sleep 0.1
    i=$((i + 1))
  done
  echo "    not active after $1 s: $(systemctl is-active antispam)"
  return 1
}}

generation() {{ timeout 20 antispam status --json | tr -d ' \n' | grep -o '"generation":[0-9]*' | head -n1 | cut -d: -f2; }}

step() {{
  name=$1
  shift
  t0=$(cut -d' ' -f1 /proc/uptime)
  if "$@"; then
    echo "test systemd::$name ... ok"
    echo "    took $(awk -v t0="$t0" '{{ printf "%.1f", $1 - t0 }}' /proc/uptime) s"
    passed=$((passed + 1))
  else
    echo "test systemd::$name ... FAILED"
    failed=$((failed + 1))
    systemctl status antispam --no-pager -n 0 2>&1 | head -n 12
    journalctl -u antispam --no-pager -n 25 -o cat 2>&1
  fi
}}

"#
    );
    s
}

fn epilogue() -> String {
    format!(
        r#"if [ $failed -eq 0 ]; then verdict=ok; rc=0; else verdict=FAILED; rc=1; fi
echo "test result: $verdict. $passed passed; $failed failed; 0 ignored; 0 measured; 0 filtered out"
echo "{END} systemd rc=$rc"
echo "{RESULT} rc=$rc"
systemctl poweroff --force --force
sleep 10
echo o > /proc/sysrq-trigger
"#
    )
}

const UNIT_STEPS: &str = r#"start_enforces() {
  # The operators' group exists: the agent hands the control socket to it (CAP_CHOWN).
  getent group antispam >/dev/null || groupadd --system antispam || return 1
  timeout 180 systemctl start antispam || return 1
  [ "$(systemctl is-active antispam)" = active ] || return 1
  echo "    StatusText=$(prop StatusText) MainPID=$(prop MainPID)"
  [ "$(prop StatusText)" = enforcing ] || return 1
  [ -S /run/antispam/control.sock ] || { echo "    no /run/antispam/control.sock"; return 1; }
  ls -l /run/antispam/control.sock
  [ "$(stat -c '%U:%G %a' /run/antispam/control.sock)" = "root:antispam 660" ] || { echo "    the control socket is not root:antispam 0660"; return 1; }
  enforces 60001 1
}

reload_applies() {
  g1=$(generation)
  cp /antispam-vm/policy-reloaded.toml /etc/antispam/policy.toml
  timeout 60 systemctl reload antispam || return 1
  i=0
  while [ $i -lt 300 ]; do
    g2=$(generation)
    [ -n "$g2" ] && [ "$g2" != "$g1" ] && break
    sleep 0.1
    i=$((i + 1))
  done
  echo "    generation $g1 -> $g2"
  [ -n "$g2" ] && [ "$g2" != "$g1" ] || return 1
  enforces 60002 2
}

# A SIGHUP as soon as the agent runs (its signals blocked from main's first line, SigBlk bit 0,
# until its handler is installed, SigCgt bit 0), long before it enforces (seconds here), and a
# `systemctl reload` queued during the start: both are reloads, not deaths. (A SIGHUP that lands earlier, while systemd
# still sets up the sandbox before exec, kills that process, and the unit restarts it:
# RestartForceExitStatus=SIGHUP.)
sighup_during_start() {
  r0=$(prop NRestarts)
  timeout 60 systemctl stop antispam || return 1
  timeout 10 systemctl start --no-block antispam || return 1
  pid=0
  i=0
  while [ $i -lt 600 ]; do
    pid=$(prop MainPID)
    if [ "$pid" != 0 ] && [ "$(readlink /proc/$pid/exe 2>/dev/null)" = /usr/local/bin/antispam ]; then
      blk=$(sed -n 's/^SigBlk:[[:space:]]*//p' /proc/$pid/status 2>/dev/null)
      cgt=$(sed -n 's/^SigCgt:[[:space:]]*//p' /proc/$pid/status 2>/dev/null)
      [ -n "$blk" ] && [ -n "$cgt" ] && [ $(((0x$blk | 0x$cgt) & 1)) -eq 1 ] && break
    fi
    i=$((i + 1))
  done
  [ "$pid" != 0 ] && [ -n "$blk" ] || { echo "    the agent never ran with SIGHUP blocked or caught"; return 1; }
  kill -HUP "$pid"
  echo "    SIGHUP to $pid (SigBlk $blk, SigCgt $cgt) at $(cut -d' ' -f1 /proc/uptime)s, while it is $(systemctl is-active antispam)"
  timeout 120 systemctl reload antispam || { echo "    systemctl reload during the start failed"; return 1; }
  wait_active 180 || return 1
  echo "    MainPID now $(prop MainPID), NRestarts $r0 -> $(prop NRestarts)"
  [ "$(prop MainPID)" = "$pid" ] && [ "$(prop NRestarts)" = "$r0" ]
}

stop_keeps_enforcing() {
  timeout 60 systemctl stop antispam || return 1
  [ "$(systemctl is-active antispam)" != active ] || return 1
  ls /sys/fs/bpf/antispam >/dev/null || return 1
  enforces 60003 2
}

start_takes_over() {
  timeout 180 systemctl start antispam || return 1
  tail -n 5 /var/lib/antispam/audit.jsonl | grep -q '"took_over":true' || { echo "    the audit log has no start that took over"; return 1; }
  enforces 60004 2
}

restarted_after_sigkill() {
  pid=$(prop MainPID)
  r0=$(prop NRestarts)
  systemctl kill -s KILL antispam
  i=0
  while [ $i -lt 1800 ]; do
    now=$(prop MainPID)
    [ "$now" != 0 ] && [ "$now" != "$pid" ] && [ "$(systemctl is-active antispam)" = active ] && break
    sleep 0.1
    i=$((i + 1))
  done
  echo "    MainPID $pid -> $(prop MainPID), NRestarts $r0 -> $(prop NRestarts), $(prop Result)"
  [ "$(systemctl is-active antispam)" = active ] && [ "$(prop MainPID)" != "$pid" ] || return 1
  [ "$(prop NRestarts)" -gt "$r0" ] || return 1
  enforces 60005 2
}

security_score() {
  out=$(timeout 120 systemd-analyze security --no-pager antispam.service 2>&1)
  line=$(echo "$out" | grep 'Overall exposure level')
  if [ -z "$line" ]; then
    # Without a D-Bus system bus in the guest: the same analysis of the installed unit file.
    echo "    (online: $(echo "$out" | tail -n 1); analysing the unit file offline)"
    out=$(timeout 120 systemd-analyze security --offline=true --no-pager /etc/systemd/system/antispam.service 2>&1)
    line=$(echo "$out" | grep 'Overall exposure level')
  fi
  echo "$out" | grep -E '✗' | sed 's/^/    /'
  score=$(echo "$line" | sed 's/.*antispam.service: *//')
  echo "{SECURITY} $score"
  [ -n "$line" ]
}

step start_enforces start_enforces
step reload_applies reload_applies
step sighup_during_start_is_a_reload_not_a_death sighup_during_start
step stop_keeps_enforcing stop_keeps_enforcing
step start_takes_over start_takes_over
step restarted_after_sigkill restarted_after_sigkill
step systemd_analyze_security security_score

"#;

const PACKAGE_STEPS: &str = r#"pkg_version() { dpkg-query -W -f '${Version}' antispam 2>/dev/null; }

install_enables_and_enforces() {
  # The package's own policy (the example policy) first, then this test's stricter one.
  timeout 300 dpkg -i /antispam-vm/antispam-first.deb || return 1
  echo "    installed $(pkg_version); $(systemctl is-enabled antispam) $(systemctl is-active antispam)"
  [ "$(systemctl is-enabled antispam)" = enabled ] || return 1
  wait_active 180 || return 1
  [ "$(prop StatusText)" = enforcing ] || { echo "    StatusText=$(prop StatusText)"; return 1; }
  getent group antispam >/dev/null || { echo "    no antispam group"; return 1; }
  [ "$(stat -c '%U:%G %a' /run/antispam/control.sock)" = "root:antispam 660" ] || return 1
  for f in /usr/sbin/antispam /usr/share/man/man8/antispam.8.gz /usr/share/bash-completion/completions/antispam /etc/logrotate.d/antispam /usr/share/doc/antispam/operations.md; do
    [ -e "$f" ] || { echo "    missing $f"; return 1; }
  done
  systemctl status antispam --no-pager -n 0 | head -n 4 | sed 's/^/    /'
  g1=$(generation)
  cp /antispam-vm/policy.toml /etc/antispam/policy.toml
  timeout 60 systemctl reload antispam || return 1
  i=0
  while [ $i -lt 300 ] && [ "$(generation)" = "$g1" ]; do sleep 0.1; i=$((i + 1)); done
  enforces 60011 1
}

# The agent's errors are errors in the journal (a <3> prefix), its information is not.
journal_priorities() {
  cp /etc/antispam/policy.toml /tmp/policy.good
  printf 'ports = [25\n' > /etc/antispam/policy.toml
  kill -HUP "$(prop MainPID)"
  i=0
  while [ $i -lt 100 ] && ! journalctl -u antispam -p err -o cat --no-pager | grep -q 'reload refused'; do sleep 0.1; i=$((i + 1)); done
  cp /tmp/policy.good /etc/antispam/policy.toml
  kill -HUP "$(prop MainPID)"
  journalctl -u antispam -p err -o cat --no-pager | sed 's/^/    err: /' | tail -n 4
  journalctl -u antispam -p err -o cat --no-pager | grep -q 'reload refused' || return 1
  journalctl -u antispam -p info -o cat --no-pager | grep -q '^enforcing ' || { echo "    no info line"; return 1; }
  ! journalctl -u antispam -p warning -o cat --no-pager | grep -q '^enforcing '
}

logrotate_reopens() {
  [ -s /var/log/antispam/events.jsonl ] || { echo "    no event log"; return 1; }
  timeout 60 logrotate --force /etc/logrotate.d/antispam || return 1
  [ -e /var/log/antispam/events.jsonl.1 ] || { echo "    not rotated"; ls -l /var/log/antispam; return 1; }
  i=0
  while [ $i -lt 100 ] && ! [ -e /var/log/antispam/events.jsonl ]; do sleep 0.1; i=$((i + 1)); done
  probe 60012 >/dev/null
  i=0
  while [ $i -lt 100 ] && ! grep -q '"uid":60012' /var/log/antispam/events.jsonl 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
  ls -l /var/log/antispam | sed 's/^/    /'
  grep -q '"uid":60012' /var/log/antispam/events.jsonl
}

upgrade_takes_over_without_a_gap() {
  v1=$(pkg_version)
  # UID 60013 spends its budget; from then on every probe must be refused, during the upgrade
  # too (the pinned programs enforce while the old agent stops and the new one starts).
  [ "$(probe 60013)" = closed ] || return 1
  : > /tmp/gap
  ( while [ ! -e /tmp/upgraded ]; do probe 60013 >> /tmp/gap; sleep 0.2; done ) &
  watcher=$!
  timeout 300 dpkg -i /antispam-vm/antispam-second.deb
  rc=$?
  wait_active 180
  touch /tmp/upgraded
  wait $watcher
  v2=$(pkg_version)
  echo "    $v1 -> $v2 (dpkg rc $rc); probes during the upgrade: $(sort /tmp/gap | uniq -c | tr '\n' ' ')"
  [ $rc -eq 0 ] && [ "$v2" != "$v1" ] || return 1
  [ "$(prop StatusText)" = enforcing ] || return 1
  ! grep -qv '^refused$' /tmp/gap || return 1
  [ -s /tmp/gap ] || return 1
  tail -n 8 /var/lib/antispam/audit.jsonl | grep -q '"took_over":true' || { echo "    no start that took over"; return 1; }
  # The operator's policy (a changed conffile) is kept.
  cmp -s /antispam-vm/policy.toml /etc/antispam/policy.toml || { echo "    the conffile was replaced"; return 1; }
  enforces 60014 1
}

purge_leaves_nothing() {
  timeout 300 dpkg --purge antispam || return 1
  left=""
  for f in /usr/sbin/antispam /lib/systemd/system/antispam.service /etc/antispam /var/lib/antispam /var/log/antispam /sys/fs/bpf/antispam; do
    [ -e "$f" ] && left="$left $f"
  done
  getent group antispam >/dev/null && left="$left group:antispam"
  [ "$(systemctl is-active antispam)" = active ] && left="$left the-service"
  echo "    left:${left:- nothing}"
  [ -z "$left" ] || return 1
  # Nothing enforces any more.
  [ "$(probe 60015)" = closed ] && [ "$(probe 60015)" = closed ]
}

step install_enables_and_enforces install_enables_and_enforces
step journal_has_priorities journal_priorities
step logrotate_reopens_the_event_log logrotate_reopens
step upgrade_takes_over_without_a_gap upgrade_takes_over_without_a_gap
step purge_leaves_nothing purge_leaves_nothing

"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_installs_the_shipped_unit_and_boots_systemd() {
        let plan = Plan {
            agent: Path::new("/w/target/release/antispam"),
            unit: Path::new("/w/deploy/systemd/antispam.service"),
            dir: Path::new("/w/target/vm/systemd"),
            epoch: 1,
            debs: None,
        };
        let s = init_script(&plan, &[]);
        assert!(s.contains(
            "cp '/host/w/deploy/systemd/antispam.service' $R/etc/systemd/system/antispam.service"
        ));
        assert!(s.contains("cp '/host/w/target/release/antispam' $R/usr/local/bin/antispam"));
        assert!(s
            .trim_end()
            .ends_with("exec switch_root $R /lib/systemd/systemd"));
        let t = test_script(1);
        assert!(t.contains("step restarted_after_sigkill"));
        assert!(t.contains("echo \"ANTISPAM-VM-RESULT rc=$rc\""));
        assert!(t.contains("echo \"ANTISPAM-VM-SECURITY $score\""));
        let p = package_script(1);
        assert!(p.contains("step purge_leaves_nothing"));
        assert!(!p.contains("step start_enforces"));
        let debs = Plan {
            debs: Some((Path::new("/w/a.deb"), Path::new("/w/b.deb"))),
            ..plan
        };
        let s = init_script(&debs, &[]);
        assert!(s.contains("cp '/host/w/a.deb' $R/antispam-vm/antispam-first.deb"));
        assert!(!s.contains("usr/local/bin/antispam"));
    }
}
