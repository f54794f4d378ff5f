//! `antispam run`: the agent, in the foreground.

use std::{
    fs::OpenOptions,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{atomic::Ordering, Arc, Mutex, RwLock},
    time::SystemTime,
};

use antispam_common::key::{KeyId, KeyState};
use aya::maps::{HashMap, MapData};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
};

use crate::{
    assign::{self, ancestors},
    audit::{sha256_hex, AuditLog},
    cgroupfs::{self, CgroupNames},
    compile::{self, Options},
    error::Error,
    events::{self, EventFilter},
    http,
    kernel::{missing, Kernel, RuleMaps},
    names::UserNames,
    policy::Policy,
    state::{Counters, Enforced, Shared},
    watch::{CgroupWatcher, Change},
};

/// Where the audit log lives unless --audit-log says otherwise.
pub const DEFAULT_AUDIT_LOG: &str = "/var/lib/antispam/audit.jsonl";

#[derive(clap::Args)]
pub struct Args {
    /// Policy file (TOML). Without it, the built-in policy: 30 SMTP connects a minute per UID,
    /// local MTA users and loopback destinations unlimited.
    #[arg(long, env = "ANTISPAM_POLICY")]
    policy: Option<PathBuf>,
    /// cgroup v2 directory to enforce on (it and everything below it). Default: the root of the
    /// cgroup v2 mount, i.e. the whole host.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Where to serve /metrics (Prometheus) and /status (JSON).
    #[arg(long, default_value = http::DEFAULT_ADDR)]
    metrics_addr: SocketAddr,
    /// Append the JSON event log to this file instead of standard output.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Which decisions to log: every SMTP connect (the connection trail) or only refusals.
    #[arg(long, value_enum, default_value_t = EventFilter::All)]
    events: EventFilter,
    /// Per-UID and per-cgroup metric series are kept for at most this many UIDs and this many
    /// cgroups, the most active; the rest are summed into uid="other" / cgroup="other".
    #[arg(long, default_value_t = 100)]
    metrics_max_keys: usize,
    /// Forward the kernel programs' debug log (aya-log) to standard error.
    #[arg(long)]
    kernel_debug: bool,
    /// The tamper-evident audit log (hash chain, fsync'd): agent start and stop, every policy
    /// load and reload. The agent refuses to run if it cannot write it.
    #[arg(long, default_value = DEFAULT_AUDIT_LOG)]
    audit_log: PathBuf,
    /// The control socket operators' commands (suspend, kill-switch…) reach the agent on.
    #[arg(long, default_value = crate::control::DEFAULT_SOCKET)]
    control_socket: PathBuf,
    /// Members of this group (and root) may operate the agent over the control socket.
    #[arg(long, default_value = crate::control::DEFAULT_GROUP)]
    operators_group: String,
    /// Directory in the BPF filesystem where programs and maps are pinned, so that enforcement
    /// goes on while the agent is stopped or restarting (`antispam uninstall` removes them).
    #[arg(long, default_value = crate::pins::DEFAULT_ROOT)]
    pin_dir: PathBuf,
    /// Reload only on SIGHUP, not also when the policy file changes.
    #[arg(long)]
    no_reload_on_change: bool,
}

pub fn main(args: Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("antispam: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain: aya's errors keep the syscall's errno in their source.
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("antispam: {msg}");
            ExitCode::from(2)
        }
    }
}

fn load_policy(path: Option<&Path>) -> Result<Policy, Error> {
    let policy = match path {
        Some(p) => Policy::load(p)?,
        None => Policy::builtin(),
    };
    for w in &policy.warnings {
        log::warn!("{w}");
    }
    Ok(policy)
}

/// The attach directory, checked to be inside the cgroup v2 mount.
fn attach_dir(mount: &Path, wanted: Option<&Path>) -> Result<PathBuf, Error> {
    let dir = wanted.unwrap_or(mount);
    let canon = dir.canonicalize().map_err(|source| Error::Io {
        what: format!("cgroup {}", dir.display()),
        source,
    })?;
    if !canon.starts_with(mount) || !canon.join("cgroup.procs").exists() {
        return Err(Error::NotACgroup {
            path: dir.to_path_buf(),
            mount: mount.to_path_buf(),
        });
    }
    Ok(canon)
}

/// Assigns cgroup rules over the whole tree and warns about rules that cover nothing yet.
fn assign_all(policy: &Policy, watcher: &CgroupWatcher, dir: &Path) -> assign::Assignments {
    let a = assign::assign_tree(policy, &watcher.tree());
    for rule in policy.rules.iter().filter(|r| !r.cgroups.is_empty()) {
        if !a.values().any(|x| x.rule.rule_id == rule.id) {
            log::info!(
                "{}:{}: {} matches no cgroup under {} yet; it applies as soon as one appears",
                policy.origin,
                rule.line,
                rule.name(),
                dir.display()
            );
        }
    }
    a
}

/// What the main loop owns and changes: the rule maps, the watcher, the state map handle.
pub struct Control<'a> {
    args: &'a Args,
    pub shared: &'a Shared,
    pub maps: &'a mut RuleMaps,
    keys: &'a mut HashMap<MapData, KeyId, KeyState>,
    pub watcher: Option<&'a mut CgroupWatcher>,
    audit: &'a mut AuditLog,
    /// Offence history and the suspensions in force, kept on disk.
    pub book: &'a mut crate::strikes::Book,
    pub book_path: PathBuf,
    opts: Options,
    dir: &'a Path,
    /// Where the links and maps are pinned.
    pub pin_dir: PathBuf,
    /// Set when a request ends the agent (uninstall).
    pub quit: Option<&'static str>,
    /// sha256 of the last policy text refused, not to refuse (and audit) it again on every
    /// change event.
    last_refused: Option<String>,
}

/// Appends to the audit log and keeps the audit metrics in step. A failure is logged and
/// counted (the agent keeps enforcing: refusing mail because a disk is full would be worse).
fn audit_record(audit: &mut AuditLog, shared: &Shared, event: &str, details: serde_json::Value) {
    if let Err(e) = audit.append(event, details) {
        log::error!("{e}");
    }
    let c = &shared.counters;
    c.audit_written.store(audit.written, Ordering::Relaxed);
    c.audit_failures.store(audit.failures, Ordering::Relaxed);
    c.audit_head.store(audit.head().0, Ordering::Relaxed);
}

async fn run(args: Args) -> Result<(), Error> {
    // Watched before it is read, so that no change made meanwhile is missed.
    let mut policy_watch = match (&args.policy, args.no_reload_on_change) {
        (Some(p), false) => match crate::policy_watch::PolicyWatch::new(p) {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!(
                    "cannot watch {} for changes ({e}); reload with SIGHUP",
                    p.display()
                );
                None
            }
        },
        _ => None,
    };
    let policy = load_policy(args.policy.as_deref())?;
    let mount = cgroupfs::cgroup2_mount()?;
    let dir = attach_dir(&mount, args.cgroup.as_deref())?;
    if let Some(parent) = args
        .log
        .as_deref()
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io {
            what: format!("creating the event log's directory {}", parent.display()),
            source,
        })?;
    }
    let out: Box<dyn Write + Send> = match &args.log {
        Some(path) => Box::new(std::io::BufWriter::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| Error::Io {
                    what: format!("opening event log {}", path.display()),
                    source,
                })?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let opts = Options {
        events_allowed: args.events == EventFilter::All,
    };
    let mut audit = AuditLog::open(&args.audit_log).map_err(Error::Audit)?;
    // The offence history lives beside the audit log.
    let book_path = args.audit_log.with_file_name("offences.json");
    let mut book = crate::strikes::Book::load(&book_path).map_err(Error::Audit)?;
    let operators_gid = match nix::unistd::Group::from_name(&args.operators_group) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        _ => {
            log::warn!(
                "operators group {:?} does not exist: only root may use the control socket",
                args.operators_group
            );
            None
        }
    };
    // The socket file goes when `_control_file` drops, however run() ends.
    let (control_listener, _control_file) =
        crate::control::bind(&args.control_socket, operators_gid).map_err(|source| Error::Io {
            what: format!("control socket {}", args.control_socket.display()),
            source,
        })?;

    let cgroup_id = cgroupfs::cgroup_id(&dir).map_err(|source| Error::Io {
        what: format!("cgroup {}", dir.display()),
        source,
    })?;
    let pins = crate::pins::prepare(&args.pin_dir, cgroup_id).map_err(Error::Pins)?;
    let mut kernel = Kernel::load(args.kernel_debug, &pins)?;
    // Watch before the first assignment, so no cgroup created meanwhile is missed.
    let mut watcher = match CgroupWatcher::new(&mount, &dir) {
        Ok(w) => Some(w),
        Err(e) => {
            log::error!("cannot follow the cgroup tree with inotify ({e}): cgroup rules apply to cgroups that exist at start and reload only");
            None
        }
    };
    // An agent taking over from a previous one goes on counting its generations.
    let generation = kernel
        .previous
        .map_or(1, |c| c.generation.wrapping_add(1).max(1));
    let compiled = compile::compile(&policy, generation, opts);
    let tree = watcher
        .as_ref()
        .map(CgroupWatcher::tree)
        .unwrap_or_else(|| cgroupfs::walk(&mount, &dir));
    let assignments = match &watcher {
        Some(w) => assign_all(&policy, w, &dir),
        None => assign::assign_tree(&policy, &tree),
    };
    kernel.rules.apply(&compiled, &assignments)?;
    kernel.attach(&dir, &pins)?;

    let names = CgroupNames::new(mount.clone(), dir.clone());
    for (path, id) in &tree {
        names.insert(*id, path);
    }
    let shared = Arc::new(Shared {
        enforced: RwLock::new(Arc::new(Enforced { policy, compiled })),
        assignments: Mutex::new(assignments),
        generation: generation.into(),
        cgroups: names,
        users: UserNames::default(),
        counters: Counters::default(),
        view: kernel.view.take().expect("view taken once"),
        programs_attached: kernel.attached.len(),
        attach_cgroup: cgroupfs::relative(&mount, &dir),
        audit_path: audit.path().to_path_buf(),
        operations: Mutex::new(crate::ops::Operations::default()),
        metrics_max_keys: args.metrics_max_keys,
        started: SystemTime::now(),
    });
    shared
        .counters
        .cgroups_known
        .store(tree.len() as u64, Ordering::Relaxed);
    if let Some(w) = &watcher {
        shared
            .counters
            .cgroup_watch_errors
            .store(w.watch_errors, Ordering::Relaxed);
    }

    {
        let e = shared.enforced();
        audit_record(
            &mut audit,
            &shared,
            "agent_start",
            serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "pid": std::process::id(),
                "cgroup": shared.attach_cgroup,
                "policy": e.policy.origin,
                "policy_sha256": e.policy.sha256,
                "mode": e.policy.mode.name(),
                "generation": generation,
                "pin_dir": pins.dir,
                "took_over": kernel.adopted > 0,
                // Where the connection trail goes, for `antispam report` (null: standard output).
                "event_log": args.log.as_deref().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())),
            }),
        );
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let (control_tx, mut control_rx) = tokio::sync::mpsc::channel(16);
    let (violations_tx, mut violations_rx) = tokio::sync::mpsc::channel(4096);
    let control_task = tokio::spawn(crate::control::serve(
        control_listener,
        operators_gid,
        control_tx,
        stop_rx.clone(),
    ));
    let mut expiry = tokio::time::interval(std::time::Duration::from_secs(1));
    let ring = kernel.events.take().expect("ring buffer taken once");
    let events_task = tokio::spawn(events::run(
        ring,
        shared.clone(),
        args.events,
        out,
        violations_tx,
        stop_rx.clone(),
    ));
    let (addr, http_task) = http::serve(args.metrics_addr, shared.clone(), stop_rx.clone())
        .await
        .map_err(|source| Error::Io {
            what: format!("serving metrics on {}", args.metrics_addr),
            source,
        })?;
    {
        let e = shared.enforced();
        log::info!(
            "enforcing {} (mode {}, generation {generation}) on cgroup {} with {} programs; {} cgroups followed; metrics and status on http://{addr}/",
            e.policy.origin,
            e.policy.mode.name(),
            dir.display(),
            kernel.attached.len(),
            tree.len(),
        );
    }

    let io = |source| Error::Io {
        what: "installing signal handlers".into(),
        source,
    };
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    let mut hup = signal(SignalKind::hangup()).map_err(io)?;
    let Kernel {
        rules: ref mut maps,
        keys_writer: ref mut keys,
        ..
    } = kernel;
    let mut ctl = Control {
        args: &args,
        shared: &shared,
        maps,
        keys,
        watcher: watcher.as_mut(),
        audit: &mut audit,
        book: &mut book,
        book_path,
        opts,
        dir: &dir,
        pin_dir: pins.dir.clone(),
        quit: None,
        last_refused: None,
    };
    ctl.restore();
    ctl.break_glass_restore();
    ctl.prune_runtime();
    let stop_reason;
    loop {
        let policy_changed = async {
            match policy_watch.as_mut() {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        let changes = async {
            match ctl.watcher.as_deref_mut() {
                Some(w) => w.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => { log::info!("SIGTERM: exiting"); stop_reason = "SIGTERM"; break; }
            _ = int.recv() => { log::info!("SIGINT: exiting"); stop_reason = "SIGINT"; break; }
            _ = hup.recv() => ctl.reload("SIGHUP"),
            c = policy_changed => match c {
                Some(()) => ctl.reload("file change"),
                None => {
                    log::error!("stopped watching the policy file; reload with SIGHUP");
                    policy_watch = None;
                }
            },
            Some(msg) = control_rx.recv() => {
                ctl.handle(msg);
                if let Some(why) = ctl.quit {
                    stop_reason = why;
                    break;
                }
            }
            _ = expiry.tick() => {
                ctl.expire();
                ctl.break_glass_expire();
                ctl.save_book();
                if !crate::pins::link_path(&ctl.pin_dir, antispam_common::maps::programs::CONNECT4).exists() {
                    log::warn!("the pinned links in {} are gone (antispam uninstall?): exiting", ctl.pin_dir.display());
                    stop_reason = "links unpinned";
                    break;
                }
            }
            Some(v) = violations_rx.recv() => ctl.violation(v),
            c = changes => match c {
                Some(c) => ctl.cgroups_changed(c),
                None => {
                    log::error!("stopped following the cgroup tree; new cgroups are covered at the next reload");
                    ctl.watcher = None;
                }
            },
        }
    }
    let _ = stop_tx.send(true);
    let _ = control_task.await;
    let _ = events_task.await;
    let _ = http_task.await;
    drop(kernel);
    if pins.dir.exists() {
        log::info!(
            "the programs stay attached and keep enforcing (pinned in {}); `antispam uninstall` removes them",
            pins.dir.display()
        );
    } else {
        log::info!("uninstalled: nothing of antispam is left attached");
    }
    audit_record(
        &mut audit,
        &shared,
        "agent_stop",
        serde_json::json!({"reason": stop_reason, "generation": shared.generation.load(Ordering::Relaxed)}),
    );
    Ok(())
}

impl Control<'_> {
    /// Appends to the audit log.
    pub fn audit(&mut self, event: &str, details: serde_json::Value) {
        audit_record(self.audit, self.shared, event, details);
    }

    /// Audits and counts a refused reload (counted once audited, so that whoever sees the count
    /// sees the record too).
    fn refused(
        &mut self,
        path: &Path,
        sha256: &str,
        in_force: &str,
        problems: Vec<String>,
        trigger: &str,
    ) {
        audit_record(
            self.audit,
            self.shared,
            "policy_reload_refused",
            serde_json::json!({
                "policy": path.display().to_string(),
                "policy_sha256": sha256,
                "in_force_sha256": in_force,
                "problems": problems,
                "trigger": trigger,
            }),
        );
        self.shared
            .counters
            .reloads_error
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Re-reads the policy file. A valid policy replaces the old one; an invalid one is refused
    /// with its problems and the old one stays in force.
    fn reload(&mut self, trigger: &str) {
        let shared = self.shared;
        let Some(path) = &self.args.policy else {
            log::info!("{trigger}: running on the built-in policy; nothing to reload");
            return;
        };
        let previous = shared.enforced().policy.sha256.clone();
        if trigger != "SIGHUP" {
            // A change event for content already in force, or already refused, changes nothing.
            let now = std::fs::read(path)
                .map(|b| sha256_hex(&b))
                .unwrap_or_default();
            if now == previous || self.last_refused.as_deref() == Some(now.as_str()) {
                return;
            }
        }
        let policy = match load_policy(Some(path)) {
            Ok(p) => p,
            Err(e) => {
                log::error!("{trigger}: reload refused, the previous policy stays in force: {e}");
                let problems: Vec<String> = match &e {
                    Error::Policy(p) => p.0.iter().map(ToString::to_string).collect(),
                    other => vec![other.to_string()],
                };
                let refused = std::fs::read(path)
                    .map(|b| sha256_hex(&b))
                    .unwrap_or_default();
                self.last_refused = Some(refused.clone());
                self.refused(path, &refused, &previous, problems, trigger);
                return;
            }
        };
        let generation = shared.generation.load(Ordering::Relaxed) + 1;
        let compiled = compile::compile(&policy, generation, self.opts);
        let assignments = match self.watcher.as_deref() {
            Some(w) => assign_all(&policy, w, self.dir),
            None => {
                let mount = cgroupfs::cgroup2_mount().unwrap_or_default();
                assign::assign_tree(&policy, &cgroupfs::walk(&mount, self.dir))
            }
        };
        if let Err(e) = self.maps.apply(&compiled, &assignments) {
            log::error!(
                "{trigger}: the new policy could not be written to the kernel ({e}); the previous one stays in force"
            );
            let problems = vec![format!("writing the kernel maps: {e}")];
            self.refused(path, &policy.sha256, &previous, problems, trigger);
            return;
        }
        shared.generation.store(generation, Ordering::Relaxed);
        log::info!("{trigger}: {policy} (generation {generation})");
        self.last_refused = None;
        audit_record(
            self.audit,
            shared,
            "policy_reload",
            serde_json::json!({
                "policy": policy.origin,
                "policy_sha256": policy.sha256,
                "previous_sha256": previous,
                "mode": policy.mode.name(),
                "generation": generation,
                "trigger": trigger,
            }),
        );
        *shared.assignments() = assignments;
        shared.set_enforced(Enforced { policy, compiled });
        shared.counters.reloads_ok.fetch_add(1, Ordering::Relaxed);
    }

    /// Covers new cgroups and forgets removed ones, in the maps and in the agent's state.
    fn cgroups_changed(&mut self, changes: Vec<Change>) {
        let shared = self.shared;
        let enforced = shared.enforced();
        let c = &shared.counters;
        let mut assignments = shared.assignments();
        let mut created = Vec::new();
        for change in changes {
            if let Change::Created { path, id } = &change {
                created.push((path.clone(), *id));
            }
            let result = match change {
                Change::Created { path, id } => {
                    c.cgroups_created.fetch_add(1, Ordering::Relaxed);
                    shared.cgroups.insert(id, &path);
                    let watcher = self.watcher.as_deref();
                    let inherited = ancestors(&path).find_map(|a| {
                        let aid = watcher.and_then(|w| w.id_of(a))?;
                        assignments.get(&aid).map(|x| x.rule)
                    });
                    match assign::assign(&enforced.policy, &path, id, inherited) {
                        Some(rule) => {
                            log::debug!(
                                "cgroup {path} appeared: {}",
                                enforced.policy.rule_name(rule.rule_id)
                            );
                            assignments.insert(
                                id,
                                assign::Assignment {
                                    path: path.clone(),
                                    rule,
                                },
                            );
                            self.maps.set_cgroup(id, &rule)
                        }
                        None => Ok(()),
                    }
                }
                Change::Removed { path, id } => {
                    c.cgroups_removed.fetch_add(1, Ordering::Relaxed);
                    shared.cgroups.remove(id);
                    log::debug!("cgroup {path} is gone");
                    let had_rule = assignments.remove(&id).is_some();
                    let r = if had_rule {
                        self.maps.remove_cgroup(id)
                    } else {
                        Ok(())
                    };
                    // Its counters and bucket go too: nothing is left behind for a gone cgroup.
                    match self.keys.remove(&KeyId::cgroup(id)) {
                        Err(e) if !missing(&e) => {
                            log::warn!("dropping the state of cgroup {path}: {e}")
                        }
                        _ => {}
                    }
                    r
                }
            };
            if let Err(e) = result {
                c.cgroup_update_errors.fetch_add(1, Ordering::Relaxed);
                log::error!("updating the cgroup rules: {e}");
            }
        }
        drop(assignments);
        for (path, id) in created {
            self.suspend_if_below_suspended(&path, id);
            self.break_glass_cover(&path, id);
        }
        if let Some(w) = self.watcher.as_deref() {
            c.cgroups_known.store(w.len() as u64, Ordering::Relaxed);
            c.cgroup_watch_errors
                .store(w.watch_errors, Ordering::Relaxed);
        }
    }
}
