//! `antispam run`: the agent, in the foreground.

use std::{
    fs::OpenOptions,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{atomic::Ordering, Arc, RwLock},
    time::SystemTime,
};

use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
};

use crate::{
    cgroupfs::{self, CgroupNames},
    compile::{self, Compiled, Options},
    error::Error,
    events::{self, EventFilter},
    http,
    kernel::{Kernel, RuleMaps},
    names::UserNames,
    policy::Policy,
    state::{Counters, Enforced, Shared},
};

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

fn has_cgroup_rules(p: &Policy) -> bool {
    p.rules.iter().any(|r| !r.cgroups.is_empty())
}

fn compile_for(
    policy: &Policy,
    generation: u32,
    opts: Options,
    mount: &Path,
    dir: &Path,
) -> Compiled {
    let tree = if has_cgroup_rules(policy) {
        cgroupfs::walk(mount, dir)
    } else {
        Vec::new()
    };
    let c = compile::compile(policy, generation, opts, &tree);
    for rule in policy.rules.iter().filter(|r| !r.cgroups.is_empty()) {
        if !c.cgroup_matches.iter().any(|(_, _, id, _)| *id == rule.id) {
            log::warn!(
                "{}:{}: {} matches no cgroup under {} yet",
                policy.origin,
                rule.line,
                rule.name(),
                dir.display()
            );
        }
    }
    c
}

async fn run(args: Args) -> Result<(), Error> {
    let policy = load_policy(args.policy.as_deref())?;
    let mount = cgroupfs::cgroup2_mount()?;
    let dir = attach_dir(&mount, args.cgroup.as_deref())?;
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

    let mut kernel = Kernel::load(args.kernel_debug)?;
    let generation = 1;
    let compiled = compile_for(&policy, generation, opts, &mount, &dir);
    kernel.rules.apply(&compiled)?;
    kernel.attach(&dir)?;

    let shared = Arc::new(Shared {
        enforced: RwLock::new(Arc::new(Enforced { policy, compiled })),
        generation: generation.into(),
        cgroups: CgroupNames::new(mount.clone(), dir.clone()),
        users: UserNames::default(),
        counters: Counters::default(),
        view: kernel.view.take().expect("view taken once"),
        programs_attached: kernel.attached.len(),
        attach_cgroup: cgroupfs::relative(&mount, &dir),
        metrics_max_keys: args.metrics_max_keys,
        started: SystemTime::now(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let ring = kernel.events.take().expect("ring buffer taken once");
    let events_task = tokio::spawn(events::run(
        ring,
        shared.clone(),
        args.events,
        out,
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
            "enforcing {} (mode {}, generation {generation}) on cgroup {} with {} programs; metrics and status on http://{addr}/",
            e.policy.origin,
            e.policy.mode.name(),
            dir.display(),
            kernel.attached.len()
        );
    }

    let io = |source| Error::Io {
        what: "installing signal handlers".into(),
        source,
    };
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    let mut hup = signal(SignalKind::hangup()).map_err(io)?;
    loop {
        tokio::select! {
            _ = term.recv() => { log::info!("SIGTERM: detaching and exiting"); break; }
            _ = int.recv() => { log::info!("SIGINT: detaching and exiting"); break; }
            _ = hup.recv() => reload(&args, &shared, &mut kernel.rules, opts, &mount, &dir),
        }
    }
    let _ = stop_tx.send(true);
    let _ = events_task.await;
    let _ = http_task.await;
    drop(kernel);
    log::info!("programs detached; nothing of antispam is left attached");
    Ok(())
}

/// Re-reads the policy file. A valid policy replaces the old one; an invalid one is refused with
/// its problems and the old one stays in force.
fn reload(
    args: &Args,
    shared: &Shared,
    maps: &mut RuleMaps,
    opts: Options,
    mount: &Path,
    dir: &Path,
) {
    let Some(path) = &args.policy else {
        log::info!("SIGHUP: running on the built-in policy; nothing to reload");
        return;
    };
    let policy = match load_policy(Some(path)) {
        Ok(p) => p,
        Err(e) => {
            shared
                .counters
                .reloads_error
                .fetch_add(1, Ordering::Relaxed);
            log::error!("SIGHUP: reload refused, the previous policy stays in force: {e}");
            return;
        }
    };
    let generation = shared.generation.load(Ordering::Relaxed) + 1;
    let compiled = compile_for(&policy, generation, opts, mount, dir);
    if let Err(e) = maps.apply(&compiled) {
        shared
            .counters
            .reloads_error
            .fetch_add(1, Ordering::Relaxed);
        log::error!("SIGHUP: applying the new policy failed ({e}); restoring the previous one");
        if let Err(e) = maps.apply(&shared.enforced().compiled) {
            log::error!("restoring the previous policy failed too: {e}");
        }
        return;
    }
    shared.generation.store(generation, Ordering::Relaxed);
    log::info!("SIGHUP: {policy} (generation {generation})");
    shared.set_enforced(Enforced { policy, compiled });
    shared.counters.reloads_ok.fetch_add(1, Ordering::Relaxed);
}
