//! The fleet task (`antispam run --fleet-store`): every renewal period it leases this host's
//! share of each tenant's fleet budget from the store and writes it into the tenant's kernel
//! entry, and on a schedule appends the audit log's head to the store.
//!
//! Nothing here is on the kernel path: a connect or a submission spends what the last lease
//! wrote, and when no lease was renewed in time the kernel spends the tenant's `local_rate`
//! by itself. This task only notices the change (for metrics, status and the audit log).

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::state::Shared;
use crate::{
    audit::{AuditEvent, FleetLease},
    clock::mono_now_ns,
    fleet::{LeaseRequest, Store, StoreConfig},
    policy::Tenant,
};

/// Renewals per lease: a lease outlives two missed renewals.
pub const RENEWALS_PER_LEASE: u32 = 3;
/// Upper bounds (seconds) of the store round-trip histogram.
const RTT_BUCKETS: [f64; 10] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

/// What `--fleet-*` says.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub store: StoreConfig,
    /// This host's name in the store (demand, checkpoints).
    pub host: String,
    pub lease: Duration,
    pub checkpoint_every: Duration,
}

impl FleetConfig {
    /// How often leases are renewed.
    pub fn renew_every(&self) -> Duration {
        self.lease / RENEWALS_PER_LEASE
    }

    /// How long one call to the store may take.
    pub fn timeout(&self) -> Duration {
        (self.renew_every() / 2).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }
}

/// One tenant as the fleet task last saw it.
#[derive(Debug, Clone, Default)]
pub struct TenantLease {
    /// Tokens granted by the store to this host, all leases together.
    pub granted: u64,
    /// Leases granted.
    pub leases: u64,
    /// Leases that ended unrenewed (the host fell back to `local_rate`).
    pub expired: u64,
    /// Is a lease in force (None before the first look)?
    pub leased: Option<bool>,
    /// The last grant and what the fleet's bucket held after it.
    pub last_grant: u64,
    pub fleet_left: u64,
    /// The demand this host last reported (tokens per renewal).
    pub want: u64,
    /// The kernel's spent-or-refused count at the last renewal.
    spent: Option<u64>,
}

/// What the fleet task did, for status and metrics.
#[derive(Debug)]
pub struct FleetView {
    /// None: no fleet store configured.
    pub config: Option<FleetConfig>,
    pub connected: bool,
    pub round_trips: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    pub rtt: prometheus::Histogram,
    pub tenants: BTreeMap<String, TenantLease>,
    pub checkpoints_written: u64,
    pub checkpoint_errors: u64,
    pub last_checkpoint: Option<(u64, String)>,
    /// Audit records to write (by the main loop, which owns the log).
    pub pending: Vec<AuditEvent>,
}

impl Default for FleetView {
    fn default() -> FleetView {
        let rtt = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "antispam_fleet_store_rtt_seconds",
                "Round-trip time of the fleet store's answers (lease scripts, checkpoints).",
            )
            .buckets(RTT_BUCKETS.to_vec()),
        )
        .expect("valid histogram");
        FleetView {
            config: None,
            connected: false,
            round_trips: 0,
            errors: 0,
            last_error: None,
            rtt,
            tenants: BTreeMap::new(),
            checkpoints_written: 0,
            checkpoint_errors: 0,
            last_checkpoint: None,
            pending: Vec::new(),
        }
    }
}

/// Renews leases and appends checkpoints until told to stop.
pub async fn run(
    config: FleetConfig,
    mut store: Store,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut renew = tokio::time::interval(config.renew_every());
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint: Option<Instant> = None;
    log::info!(
        "fleet store {} as host {:?}: leases of {}ms renewed every {}ms",
        config.store.redacted(),
        config.host,
        config.lease.as_millis(),
        config.renew_every().as_millis()
    );
    loop {
        tokio::select! {
            _ = renew.tick() => {}
            _ = stop.changed() => return,
        }
        renew_all(&config, &mut store, &shared).await;
        let due = last_checkpoint.is_none_or(|t| t.elapsed() >= config.checkpoint_every);
        if due && checkpoint(&config, &mut store, &shared).await {
            last_checkpoint = Some(Instant::now());
        }
    }
}

/// One renewal of every tenant's lease (one round trip for all of them); then what changed is
/// noted.
async fn renew_all(config: &FleetConfig, store: &mut Store, shared: &Shared) {
    let tenants: Vec<Tenant> = shared.enforced().policy.tenants.values().cloned().collect();
    // What each tenant spent or was refused since the last renewal, and so what to ask for:
    // twice that (room to grow), at least one token, never more than the fleet's burst.
    let mut asks: Vec<(&Tenant, u64, u64)> = Vec::with_capacity(tenants.len());
    for t in &tenants {
        let Some((_, used)) = shared.tenants().read(t.key) else {
            continue;
        };
        let spent = used.taken + used.fallback + used.refused;
        let before = shared.fleet().tenants.get(&t.name).and_then(|l| l.spent);
        let demand = before.map_or(0, |b| spent.saturating_sub(b));
        let want = demand.saturating_mul(2).clamp(1, t.rate.burst.max(1));
        asks.push((t, spent, want));
    }
    let reqs: Vec<LeaseRequest<'_>> = asks
        .iter()
        .map(|(t, _, want)| LeaseRequest {
            tenant: &t.name,
            host: &config.host,
            want: *want,
            rate_per_sec: t.rate.count as f64 / t.rate.period.seconds() as f64,
            burst: t.rate.burst,
            lease: config.lease,
        })
        .collect();
    let asked = Instant::now();
    let answer = store.lease_all(&reqs).await;
    let rtt = asked.elapsed();
    let failed = match answer {
        Ok(grants) => {
            let until = mono_now_ns().saturating_add(config.lease.as_nanos() as u64);
            let mut fleet = shared.fleet();
            if !reqs.is_empty() {
                fleet.round_trips += 1;
                fleet.rtt.observe(rtt.as_secs_f64());
            }
            for ((t, spent, want), grant) in asks.iter().zip(grants) {
                // Never more than asked for, whatever the answer says (a store or a path that
                // lies gets at most what this host would have spent anyway).
                let tokens = grant.tokens.min(*want);
                let written = shared.tenants().renew(t.key, tokens, until);
                let l = fleet.tenants.entry(t.name.clone()).or_default();
                l.spent = Some(*spent);
                l.want = *want;
                match written {
                    Ok(()) => {
                        l.granted += tokens;
                        l.leases += 1;
                        l.last_grant = tokens;
                        l.fleet_left = grant.left;
                    }
                    Err(e) => log::error!("writing the lease of tenant {}: {e}", t.name),
                }
            }
            None
        }
        Err(e) => {
            let mut fleet = shared.fleet();
            fleet.errors += 1;
            fleet.last_error = Some(e.to_string());
            for (t, spent, want) in &asks {
                let l = fleet.tenants.entry(t.name.clone()).or_default();
                l.spent = Some(*spent);
                l.want = *want;
            }
            Some(e.to_string())
        }
    };
    shared.fleet().connected = store.connected() && failed.is_none();
    note_changes(config, shared, &tenants, failed.as_deref());
}

/// Logs and queues an audit record for every tenant whose lease came or went, and forgets the
/// tenants no longer in the policy.
fn note_changes(config: &FleetConfig, shared: &Shared, tenants: &[Tenant], failed: Option<&str>) {
    let now = mono_now_ns();
    let leases: Vec<(String, bool)> = {
        let maps = shared.tenants();
        tenants
            .iter()
            .filter_map(|t| Some((t.name.clone(), maps.read(t.key)?.0.active(now))))
            .collect()
    };
    let mut fleet = shared.fleet();
    fleet
        .tenants
        .retain(|name, _| tenants.iter().any(|t| t.name == *name));
    let last_error = fleet.last_error.clone().unwrap_or_default();
    let mut records = Vec::new();
    for (name, leased) in leases {
        let l = fleet.tenants.entry(name.clone()).or_default();
        if l.leased == Some(leased) {
            continue;
        }
        let was = l.leased.replace(leased);
        let (state, why) = if leased {
            ("leased", "the fleet store granted a lease".to_string())
        } else {
            if was == Some(true) {
                l.expired += 1;
            }
            let why = match failed {
                Some(e) => format!("no lease in force: {e}"),
                None if !last_error.is_empty() => format!("no lease in force: {last_error}"),
                None => "no lease in force yet".to_string(),
            };
            ("local_rate", why)
        };
        if leased {
            log::info!("tenant {name}: fleet lease in force");
        } else {
            log::warn!("tenant {name}: on local_rate ({why})");
        }
        records.push(AuditEvent::FleetLease(FleetLease {
            tenant: name,
            state: state.to_string(),
            store: config.store.redacted(),
            why,
        }));
    }
    fleet.pending.extend(records);
}

/// Appends the audit head to the store (also when it did not move: the entry then says the
/// agent was alive with that head, and a store that lost its data gets it again): true when
/// it is there.
async fn checkpoint(config: &FleetConfig, store: &mut Store, shared: &Shared) -> bool {
    let seq = shared.counters.audit_head.load(Ordering::Relaxed);
    let hash = shared
        .counters
        .audit_anchor
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .head_hash
        .clone();
    if seq == 0 {
        return true;
    }
    let asked = Instant::now();
    let written = store.checkpoint(&config.host, seq, &hash).await;
    let mut fleet = shared.fleet();
    match written {
        Ok(()) => {
            fleet.round_trips += 1;
            fleet.rtt.observe(asked.elapsed().as_secs_f64());
            fleet.checkpoints_written += 1;
            fleet.last_checkpoint = Some((seq, hash));
            true
        }
        Err(e) => {
            fleet.checkpoint_errors += 1;
            fleet.errors += 1;
            fleet.last_error = Some(e.to_string());
            false
        }
    }
}

impl super::core::Core {
    /// Writes the fleet task's audit records (lease in force, fallback to `local_rate`).
    pub fn fleet_records(&mut self) {
        let pending = std::mem::take(&mut self.shared.fleet().pending);
        for record in pending {
            self.audit_or_log(record);
        }
    }
}
