//! The running agent: it loads the policy, attaches the kernel programs, then serves until told
//! to stop. Its tasks: the main loop (signals, policy reloads, cgroup changes, operator
//! requests, strikes, timers: `Core`), the event reader (`events`), the HTTP server (`http`,
//! with `metrics` and `status`) and the control socket (`control::server`).
//!
//! `start` is a short list of steps; each step is a function below or in the files beside.

mod actions;
mod book;
mod cgroups;
mod checkpoint;
mod config;
mod core;
mod dir_watch;
mod error;
mod event_log;
mod events;
pub mod fleet;
mod gc;
mod host;
mod http;
mod log_bound;
mod log_limit;
mod metrics;
mod operations;
mod policy_service;
pub mod policy_signers;
mod programs;
mod reload;
mod restore;
mod start;
mod state;
mod status;
mod strikes;
mod syn_check;

use std::{
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

pub use config::{Config, ExecHookChoice};
pub use error::Error;
pub use event_log::DEFAULT_MAX_BYTES as DEFAULT_LOG_MAX_BYTES;
pub use events::EventFilter;
pub use log_bound::{DEFAULT_PER_KEY as DEFAULT_LOG_PER_KEY, DEFAULT_TOTAL as DEFAULT_LOG_TOTAL};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::{mpsc, watch},
};

use self::{
    book::Book,
    core::{record, sync_counters, Core},
    dir_watch::{DirWatch, WatchTask},
    events::Violation,
    log_limit::LogLimit,
    state::{Counters, Enforced, Shared},
};
use crate::{
    audit::{AgentStop, AuditEvent, AuditLog},
    control::server::{self, Message},
    defaults,
    kernel::{pins, Kernel},
    policy::{
        assign::{self, Assignments},
        compile::{self, Options},
        Policy,
    },
    sys::{
        cgroup_watch::CgroupWatcher,
        cgroupfs::{self, CgroupNames},
        users::UserNames,
    },
};

/// Why the packet program runs with `--packet-accounting`.
pub const PACKET_ACCOUNTING: &str = "--packet-accounting";

/// How often suspensions and overrides are expired and the pins checked.
const TICK: Duration = Duration::from_secs(1);

/// Runs the agent until SIGTERM, SIGINT or `antispam uninstall`.
///
/// Start-up order: the signal handlers first (`main` blocked the signals until then); what can
/// fail without touching the kernel next (policy, metrics port, logs, audit log, offence book,
/// control socket); then the kernel, where the start is recorded before the policy is in force.
pub async fn run(config: Config) -> Result<(), Error> {
    let mut signals = Signals::new()?;
    crate::sys::signals::unblock();
    // Watched before it is read, so that no change made meanwhile is missed.
    let mut policy_watch = watch_policy(&config);
    let policy = load_policy(config.policy.as_deref(), config.policy_signers.as_deref())?;
    let mount = cgroupfs::cgroup2_mount()?;
    let dir = attach_dir(&mount, config.cgroup.as_deref())?;
    // The kernel floor first (probes only: nothing is attached or pinned), so that a kernel
    // the agent cannot run on is said in one line, before any socket or file is made.
    crate::kernel::check_features().map_err(or_capabilities)?;
    match crate::sys::rlimit::raise_nofile() {
        Ok((before, after)) if after > before => {
            log::debug!("open-file limit raised from {before} to {after}")
        }
        Ok(_) => {}
        Err(e) => log::warn!("raising the open-file limit: {e}"),
    }
    let metrics_listener = http::bind(config.metrics_addr)?;
    // A fleet store URL or file that cannot be used is said before anything is in force.
    let fleet_store = match &config.fleet {
        Some(f) => {
            Some(crate::fleet::Store::new(f.store.clone(), f.timeout()).map_err(Error::Fleet)?)
        }
        None => None,
    };
    let (event_log, event_log_opened) =
        event_log::EventLog::open(config.log.as_deref(), config.log_max_bytes).map_err(
            Error::io(format!(
                "opening event log {}",
                config.log.as_deref().unwrap_or(Path::new("-")).display()
            )),
        )?;
    let mut audit = AuditLog::open(&config.audit_log)?;
    let book_path = defaults::offence_book(&config.audit_log);
    let book = Book::load(&book_path)?;
    start::record_opened(&mut audit, &config, &event_log_opened, &book, &book_path)?;
    let operators_gid = operators_gid(&config.operators_group);
    // The socket file goes when `_control_file` drops, however run() ends.
    let (control_listener, _control_file) = server::bind(&config.control_socket, operators_gid)
        .map_err(Error::io(format!(
            "control socket {}",
            config.control_socket.display()
        )))?;
    // The MTA socket. Without it the kernel still enforces everything it does: the agent
    // says so loudly and goes on (the MTA applies its default action to what it would ask).
    let mta_gid = config
        .mta_socket
        .as_ref()
        .and_then(|_| mta_gid(&config.mta_group));
    let mta_socket = config.mta_socket.as_ref().and_then(|path| {
        match policy_service::bind(path, mta_gid, &config.mta_group, &config.control_socket) {
            Ok(bound) => {
                log::info!(
                    "MTA policy service on {} (group {})",
                    path.display(),
                    config.mta_group
                );
                Some(bound)
            }
            Err(e) => {
                log::error!(
                    "MTA policy service NOT running (messages and recipients are not counted): {e}"
                );
                None
            }
        }
    });
    let opts = Options {
        events_allowed: config.events == EventFilter::All,
    };
    let enforcing = enforce(&config, policy, &mount, &dir, opts, &mut audit)?;
    let Enforcing {
        mut kernel,
        pins,
        watcher,
        tree,
        enforced,
        assignments,
        generation,
        programs,
    } = enforcing;
    let mut program_watch = watch_programs(&enforced.policy.sendmail_programs);
    let shared = Arc::new(Shared {
        enforced: RwLock::new(Arc::new(enforced)),
        assignments: Mutex::new(assignments),
        generation: generation.into(),
        cgroups: CgroupNames::new(mount.clone(), dir.clone()),
        users: UserNames::default(),
        counters: Counters::default(),
        view: kernel.view.take().expect("view taken once"),
        programs_attached: kernel.attached.len(),
        attach_cgroup: cgroupfs::relative(&mount, &dir),
        audit_path: audit.path().to_path_buf(),
        operations: Mutex::default(),
        metrics_max_keys: config.metrics_max_keys,
        programs: Mutex::new(programs),
        exec_hook: kernel.exec_hook,
        exec_hook_why: kernel.exec_hook_why.clone(),
        sessions_not_ended: Mutex::new(None),
        packet_program: Mutex::new(kernel.packets),
        syn_check: Mutex::new(crate::control::status::SynCheckView {
            off: kernel.syn.unavailable.clone(),
            ..Default::default()
        }),
        started: SystemTime::now(),
        mta: policy_service::Counters::default(),
        reopen_log: false.into(),
        tenants: Mutex::new(kernel.tenants.take().expect("tenant maps taken once")),
        fleet: Mutex::default(),
    });
    shared.follow(&tree, watcher.as_ref());
    shared.counters.policy_in_force_now();
    sync_counters(&audit, &shared);

    let (stop_tx, stop_rx) = watch::channel(false);
    let (control_tx, mut control_rx) = mpsc::channel(16);
    let (violations_tx, mut violations_rx) = mpsc::channel(4096);
    let control_task = tokio::spawn(server::serve(
        control_listener,
        operators_gid,
        control_tx,
        stop_rx.clone(),
    ));
    let gc_task = tokio::spawn(gc::run(
        kernel
            .keys_sweeper
            .take()
            .expect("sweeper handle taken once"),
        shared.clone(),
        stop_rx.clone(),
    ));
    let (lines_tx, lines_rx) = mpsc::channel(4096);
    let (mta_listener, _mta_file) = match mta_socket {
        Some((l, f)) => (Some(l), Some(f)),
        None => (None, None),
    };
    let mta_task = mta_listener.map(|listener| {
        shared.mta.up.store(1, Ordering::Relaxed);
        let service = policy_service::Service::new(
            shared.clone(),
            lines_tx,
            defaults::mta_budgets(&config.audit_log),
            mta_gid,
        );
        tokio::spawn(policy_service::serve(
            listener,
            Arc::new(service),
            stop_rx.clone(),
        ))
    });
    let ring = kernel.events.take().expect("ring buffer taken once");
    let writer = events::Writer {
        log: event_log,
        bound: log_bound::Bound::new(config.log_refusals_per_key, config.log_refusals_per_second),
        filter: config.events,
        errors: LogLimit::default(),
    };
    let events_task = tokio::spawn(events::run(
        ring,
        shared.clone(),
        writer,
        violations_tx,
        lines_rx,
        stop_rx.clone(),
    ));
    let fleet_task = config.fleet.clone().zip(fleet_store).map(|(f, store)| {
        shared.fleet().config = Some(f.clone());
        let task = tokio::spawn(fleet::run(f, store, shared.clone(), stop_rx.clone()));
        // A fleet task that dies (a panic) leaves every tenant on local_rate once its lease
        // ends: say so, rather than show the last state for ever.
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = task.await {
                log::error!("the fleet task stopped ({e}): no lease is renewed; every tenant spends its local_rate once its lease ends");
                let mut fleet = shared.fleet();
                fleet.connected = false;
                fleet.last_error = Some(format!("the fleet task stopped: {e}"));
            }
        })
    });
    if config.fleet.is_none() && !shared.enforced().policy.tenants.is_empty() {
        log::warn!("the policy names tenants but no --fleet-store is given: every tenant spends its local_rate on this host");
    }
    let (addr, http_task) =
        http::serve(metrics_listener, shared.clone(), stop_rx.clone()).map_err(Error::io(
            format!("serving metrics on {}", config.metrics_addr),
        ))?;
    log_enforcing(&shared, &dir, &addr, tree.len());
    crate::sys::notify::ready();

    let mut core = Core {
        shared: shared.clone(),
        kernel,
        watcher,
        audit,
        book,
        book_path,
        opts,
        policy_path: config.policy.clone(),
        dir,
        pin_dir: pins.dir.clone(),
        quit: None,
        last_refused: None,
        subuid_stamp: None,
        syn: syn_check::SynFollow::default(),
        deferred: None,
        errors: LogLimit::default(),
        checkpoints: checkpoint::Checkpoints::every(config.audit_checkpoint_every),
        packet_accounting: config.packet_accounting,
        policy_signers: config.policy_signers.clone(),
    };
    core.restore();
    core.break_glass_restore();
    core.prune_runtime();
    core.sync_local_addrs();
    core.sync_subuids();
    core.sync_syn_check();
    core.audit_tick();
    let stop_reason = core
        .serve(
            &mut signals,
            Watches {
                policy: &mut policy_watch,
                programs: &mut program_watch,
            },
            &mut control_rx,
            &mut violations_rx,
        )
        .await;

    let _ = stop_tx.send(true);
    if let Some(t) = mta_task {
        let _ = t.await;
    }
    let _ = control_task.await;
    let _ = events_task.await;
    let _ = gc_task.await;
    if let Some(t) = fleet_task {
        let _ = t.await;
    }
    let _ = http_task.await;
    core.stop(stop_reason);
    Ok(())
}

/// What `enforce` put in place.
struct Enforcing {
    kernel: Kernel,
    pins: pins::Pins,
    watcher: Option<CgroupWatcher>,
    /// The cgroups under the attach point at start.
    tree: Vec<(String, u64)>,
    enforced: Enforced,
    assignments: Assignments,
    generation: u32,
    /// The submission programs as the kernel knows them.
    programs: Vec<crate::sys::programs::Resolved>,
}

/// Loads the programs (or takes over a previous agent's), writes the policy, records the
/// start, then switches to the policy and attaches. If the start cannot be recorded, nothing
/// of this agent is in force (a previous agent's pinned programs and policy go on).
/// Without one of these, probing and loading fail in ways the kernel's error does not explain
/// (EPERM, "error relocating function"): say which is missing, with what failed.
fn or_capabilities(source: crate::kernel::Error) -> Error {
    let missing = crate::sys::caps::effective()
        .map(crate::sys::caps::missing)
        .unwrap_or_default();
    if missing.is_empty() || matches!(source, crate::kernel::Error::Unsupported(_)) {
        Error::Kernel(source)
    } else {
        Error::Capabilities {
            missing,
            source: Box::new(source),
        }
    }
}

fn enforce(
    config: &Config,
    policy: Policy,
    mount: &Path,
    dir: &Path,
    opts: Options,
    audit: &mut AuditLog,
) -> Result<Enforcing, Error> {
    let cgroup_id =
        cgroupfs::cgroup_id(dir).map_err(Error::io(format!("cgroup {}", dir.display())))?;
    let pins = pins::prepare(&config.pin_dir, cgroup_id, config.max_keys)?;
    let mut kernel =
        Kernel::load(&pins, config.exec_hook, config.max_keys).map_err(or_capabilities)?;
    // Watch before the first assignment, so no cgroup created meanwhile is missed.
    let watcher = watch_cgroups(mount, dir);
    // An agent taking over from a previous one goes on counting its generations.
    let generation = kernel
        .previous
        .map_or(1, |c| c.generation.wrapping_add(1).max(1));
    let compiled = compile::compile(&policy, generation, opts);
    let tree = match &watcher {
        Some(w) => w.tree(),
        None => cgroupfs::walk(mount, dir),
    };
    let assignments = assign_all(&policy, &tree, dir);
    let programs = programs::resolve(&policy.sendmail_programs);
    log::info!(
        "submission programs: {}",
        programs::describe(&policy.sendmail_programs, &programs)
    );
    kernel.rules.set_host(host_facts(mount, dir))?;
    let known: Vec<u64> = tree.iter().map(|(_, id)| *id).collect();
    let tenants = kernel
        .tenants
        .as_mut()
        .expect("tenant maps taken after start");
    tenants.add(&policy.tenant_locals())?;
    let staged = kernel
        .rules
        .stage(&compiled, &assignments, &programs, &known)?;
    let start = start::start_record(config, &policy, mount, dir, generation, &pins);
    if let Err(e) = audit.append(&start) {
        kernel.rules.discard(staged);
        return Err(Error::StartNotRecorded(e));
    }
    let in_force = kernel.rules.commit(staged).and_then(|()| {
        kernel.attach(
            dir,
            &pins,
            config.packet_accounting.then_some(PACKET_ACCOUNTING),
        )
    });
    if let Err(e) = in_force {
        let _ = audit.append(&AuditEvent::AgentStop(AgentStop {
            reason: format!("start-up failed: {e}"),
            generation,
        }));
        return Err(e.into());
    }
    if let Some(t) = kernel.tenants.as_mut() {
        if let Err(e) = t.retain(&policy.tenant_keys()) {
            log::warn!("removing the entries of tenants no longer named: {e}");
        }
    }
    Ok(Enforcing {
        kernel,
        pins,
        watcher,
        tree,
        enforced: Enforced { policy, compiled },
        assignments,
        generation,
        programs,
    })
}

/// What the kernel programs must know of the host: the network namespace the local MTA listens
/// in (this one), and the attach point's cgroup level.
fn host_facts(mount: &Path, dir: &Path) -> crate::kernel::Host {
    let netns = crate::sys::netns::cookie().unwrap_or_else(|e| {
        log::warn!("cannot read this network namespace's cookie ({e}): SMTP to loopback in any namespace counts as local submission");
        0
    });
    crate::kernel::Host {
        netns,
        attach_level: cgroupfs::level(&cgroupfs::relative(mount, dir)),
        subuid_min: u32::MAX,
    }
}

fn log_enforcing(shared: &Shared, dir: &Path, addr: &std::net::SocketAddr, cgroups: usize) {
    use crate::control::status::ExecHook;
    let why = shared.exec_hook_why.as_deref().unwrap_or("");
    match shared.exec_hook {
        ExecHook::Lsm => log::info!("mail through sendmail: decided by BPF LSM (refused with EPERM)"),
        ExecHook::Tracepoint => log::warn!("mail through sendmail: BPF LSM cannot be used ({why}); the tracepoint fallback counts it and kills a submission over budget before it runs (the caller sees SIGKILL, not EPERM)"),
        ExecHook::None => log::error!("mail through sendmail is NOT counted: {why}"),
    }
    let e = shared.enforced();
    log::info!(
        "enforcing {} (mode {}, generation {}) on cgroup {} with {} programs; {cgroups} cgroups followed; metrics on http://{addr}/metrics",
        e.policy.origin,
        e.policy.mode.name(),
        shared.generation.load(Ordering::Relaxed),
        dir.display(),
        shared.programs_attached,
    );
}

impl Shared {
    /// Names the cgroups of the tree at start, and counts them.
    fn follow(&self, tree: &[(String, u64)], watcher: Option<&CgroupWatcher>) {
        for (path, id) in tree {
            self.cgroups.insert(*id, path);
        }
        let c = &self.counters;
        c.cgroups_known.store(tree.len() as u64, Ordering::Relaxed);
        if let Some(w) = watcher {
            c.cgroup_watch_errors
                .store(w.watch_errors, Ordering::Relaxed);
        }
    }
}

impl Core {
    /// After the main loop: the programs stay attached (unless uninstalled); the stop is
    /// audited.
    fn stop(self, reason: &str) {
        let Core {
            kernel,
            mut audit,
            shared,
            pin_dir,
            ..
        } = self;
        drop(kernel);
        if pin_dir.exists() {
            log::info!(
                "the programs stay attached and keep enforcing (pinned in {}); `antispam uninstall` removes them",
                pin_dir.display()
            );
        } else {
            log::info!("uninstalled: nothing of antispam is left attached");
        }
        let stop = AuditEvent::AgentStop(AgentStop {
            reason: reason.to_string(),
            generation: shared.generation.load(Ordering::Relaxed),
        });
        if let Err(e) = record(&mut audit, &shared, &stop) {
            log::error!("{e}");
        }
        checkpoint::log_head(&audit, "stop");
    }
}

/// The files the main loop follows.
struct Watches<'a> {
    policy: &'a mut Option<WatchTask>,
    programs: &'a mut Option<WatchTask>,
}

/// The signals the agent acts on.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> Result<Signals, Error> {
        let io = Error::io("installing signal handlers");
        let (term, int, hup) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(i), Ok(h)) => (t, i, h),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Err(io(e)),
        };
        Ok(Signals { term, int, hup })
    }
}

impl Core {
    /// The main loop: returns why it stopped.
    async fn serve(
        &mut self,
        signals: &mut Signals,
        watches: Watches<'_>,
        control: &mut mpsc::Receiver<Message>,
        violations: &mut mpsc::Receiver<Violation>,
    ) -> &'static str {
        let Watches {
            policy: policy_watch,
            programs: program_watch,
        } = watches;
        let mut tick = tokio::time::interval(TICK);
        loop {
            let policy_changed = async {
                match policy_watch.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            };
            let programs_changed = async {
                match program_watch.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            };
            let cgroup_changes = async {
                match self.watcher.as_mut() {
                    Some(w) => w.next().await,
                    None => std::future::pending().await,
                }
            };
            let retry_at = self.deferred.map(|d| d.retry_at);
            let deferred_due = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = signals.term.recv() => { log::info!("SIGTERM: exiting"); return "SIGTERM"; }
                _ = signals.int.recv() => { log::info!("SIGINT: exiting"); return "SIGINT"; }
                _ = signals.hup.recv() => {
                    // After logrotate moved it: the events task opens the log's path anew.
                    self.shared.reopen_log.store(true, std::sync::atomic::Ordering::Relaxed);
                    if self.reload("SIGHUP") {
                        *program_watch = watch_programs(&self.shared.enforced().policy.sendmail_programs);
                    }
                }
                c = policy_changed => match c {
                    Some(()) => {
                        if self.reload("file change") {
                            *program_watch = watch_programs(&self.shared.enforced().policy.sendmail_programs);
                        }
                    }
                    None => {
                        log::error!("stopped watching the policy file; reload with SIGHUP");
                        *policy_watch = None;
                    }
                },
                () = deferred_due => {
                    if self.retry_reload() {
                        *program_watch = watch_programs(&self.shared.enforced().policy.sendmail_programs);
                    }
                }
                c = programs_changed => match c {
                    Some(()) => self.programs_changed(),
                    None => {
                        log::error!("stopped watching the submission programs; they are resolved again at the next reload");
                        *program_watch = None;
                    }
                },
                Some(msg) = control.recv() => {
                    self.handle(msg);
                    if let Some(why) = self.quit {
                        return why;
                    }
                }
                _ = tick.tick() => {
                    if let Some(why) = self.every_second() {
                        return why;
                    }
                }
                Some(v) = violations.recv() => self.violation(v),
                c = cgroup_changes => match c {
                    Some(c) => self.cgroups_changed(c),
                    None => {
                        log::error!("stopped following the cgroup tree; new cgroups are covered at the next reload");
                        self.watcher = None;
                    }
                },
            }
        }
    }

    /// Ends what ran out, saves the book, and stops when the pins are gone.
    fn every_second(&mut self) -> Option<&'static str> {
        self.expire();
        self.break_glass_expire();
        self.fleet_records();
        self.audit_tick();
        self.save_book();
        self.errors.flush();
        self.sync_local_addrs();
        self.sync_subuids();
        self.sync_syn_check();
        self.sync_packets();
        let link = pins::link_path(&self.pin_dir, antispam_common::maps::programs::CONNECT4);
        if link.exists() {
            return None;
        }
        log::warn!(
            "the pinned links in {} are gone (antispam uninstall?): exiting",
            self.pin_dir.display()
        );
        Some("links unpinned")
    }
}

fn watch_policy(config: &Config) -> Option<WatchTask> {
    let path = config.policy.as_ref().filter(|_| config.reload_on_change)?;
    match DirWatch::policy(path) {
        Ok(w) => Some(WatchTask::spawn(w)),
        Err(e) => {
            log::warn!(
                "cannot watch {} for changes ({e}); reload with SIGHUP",
                path.display()
            );
            None
        }
    }
}

fn watch_programs(paths: &[PathBuf]) -> Option<WatchTask> {
    match programs::watch(paths) {
        Ok(w) => Some(WatchTask::spawn(w)),
        Err(e) => {
            log::warn!("cannot watch the submission programs for upgrades ({e}); they are resolved again at reload");
            None
        }
    }
}

impl Core {
    /// The host's addresses as the kernel knows them (SMTP to them is local submission).
    fn sync_local_addrs(&mut self) {
        let now = match crate::sys::local_addrs::current() {
            Ok(a) => a,
            Err(e) => {
                self.errors
                    .error("addresses", format!("reading the host's addresses: {e}"));
                return;
            }
        };
        match self.kernel.local_addrs.sync(&now) {
            Ok(true) => log::debug!("the host's addresses: {now:?}"),
            Ok(false) => {}
            Err(e) => self
                .errors
                .error("addresses", format!("writing the host's addresses: {e}")),
        }
    }
}

fn watch_cgroups(mount: &Path, dir: &Path) -> Option<CgroupWatcher> {
    match CgroupWatcher::new(mount, dir) {
        Ok(w) => Some(w),
        Err(e) => {
            log::error!("cannot follow the cgroup tree with inotify ({e}): cgroup rules apply to cgroups that exist at start and reload only");
            None
        }
    }
}

/// The policy file (read whole, waiting for a writer to finish), or the built-in policy; its
/// warnings are logged.
pub(crate) fn load_policy(
    path: Option<&Path>,
    signers: Option<&Path>,
) -> Result<Policy, crate::policy::Problems> {
    let policy = match path {
        Some(p) => reload::load_file(p, reload::WAIT_FOR_WRITER, signers)?,
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
    let canon = dir
        .canonicalize()
        .map_err(Error::io(format!("cgroup {}", dir.display())))?;
    if !canon.starts_with(mount) || !canon.join("cgroup.procs").exists() {
        return Err(Error::NotACgroup {
            path: dir.to_path_buf(),
            mount: mount.to_path_buf(),
        });
    }
    Ok(canon)
}

/// The gid of the operators group; None (root only) if it does not exist.
fn operators_gid(group: &str) -> Option<u32> {
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        _ => {
            log::warn!(
                "operators group {group:?} does not exist: only root may use the control socket"
            );
            None
        }
    }
}

/// The gid of the MTA's group; None (root only: the MTA cannot connect) if it does not exist.
fn mta_gid(group: &str) -> Option<u32> {
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        _ => {
            log::warn!(
                "MTA group {group:?} does not exist: the MTA policy service's socket is root's only, so the MTA cannot reach it (give --mta-group)"
            );
            None
        }
    }
}

/// Assigns cgroup rules over the whole tree and says which rules cover nothing yet.
fn assign_all(policy: &Policy, tree: &[(String, u64)], dir: &Path) -> Assignments {
    let a = assign::assign_tree(policy, tree);
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
