//! The per-key state map (`AS_KEYS`) evicts nothing by itself (an LRU would hand a fresh budget
//! to a key that other keys' traffic pushed out): this task removes the entries that no longer
//! hold any state, so the map does not fill with keys seen once. An entry goes when its bucket
//! is full again and it has been idle for [`IDLE`]; an own-path budget entry as soon as its
//! bucket is full. A fresh entry is a full bucket, so nothing of a budget is lost; the key's
//! counters start again from zero when it comes back.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use antispam_common::key::{KeyId, KeyState, BUDGET_ALL_PATHS};
use aya::maps::{HashMap, MapData};
use tokio::sync::watch;

use super::state::Shared;
use crate::{clock, kernel::missing};

/// How often the map is swept.
const EVERY: Duration = Duration::from_secs(60);
/// How long an entry with a full bucket must have been idle to go.
const IDLE: Duration = Duration::from_secs(600);

/// Does this entry hold nothing a fresh one would not (at `now`, kernel clock)?
fn collectable(k: &KeyId, s: &KeyState, now: u64) -> bool {
    let full = s.tat <= now;
    if k.budget != BUDGET_ALL_PATHS {
        return full;
    }
    let idle_ns = IDLE.as_nanos() as u64;
    full && s.last_ns.saturating_add(idle_ns) <= now
}

/// Sweeps `keys` every [`EVERY`] until `stop` changes.
pub async fn run(
    keys: HashMap<MapData, KeyId, KeyState>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let keys = Arc::new(std::sync::Mutex::new(keys));
    let mut tick = tokio::time::interval(EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let keys = keys.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let mut keys = keys.lock().unwrap_or_else(|e| e.into_inner());
            sweep(&mut keys)
        })
        .await;
        match swept {
            Ok(n) => {
                shared
                    .counters
                    .keys_collected
                    .fetch_add(n as u64, Ordering::Relaxed);
                if n > 0 {
                    log::debug!("removed {n} idle entries from the per-key state map");
                }
            }
            Err(e) => log::error!("sweeping the per-key state map: {e}"),
        }
    }
}

/// One sweep: the number of entries removed.
fn sweep(keys: &mut HashMap<MapData, KeyId, KeyState>) -> usize {
    let now = clock::mono_now_ns();
    let idle: Vec<KeyId> = keys
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, s)| collectable(k, s, now))
        .map(|(k, _)| k)
        .collect();
    let mut removed = 0;
    for k in idle {
        // Read again just before: an entry used since the listing stays.
        let still = keys
            .get(&k, 0)
            .is_ok_and(|s| collectable(&k, &s, clock::mono_now_ns()));
        if !still {
            continue;
        }
        match keys.remove(&k) {
            Ok(()) => removed += 1,
            Err(e) if missing(&e) => {}
            Err(e) => {
                log::warn!("removing an idle key: {e}");
                break;
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_idle_buckets_go() {
        let s = |tat: u64, last_ns: u64| KeyState {
            tat,
            last_ns,
            ..Default::default()
        };
        let now = 1_000 * 1_000_000_000;
        let uid = KeyId::uid(1000);
        let idle = now - IDLE.as_nanos() as u64;
        assert!(collectable(&uid, &s(now - 1, idle), now));
        assert!(
            !collectable(&uid, &s(now + 1, idle), now),
            "bucket not full"
        );
        assert!(
            !collectable(&uid, &s(now - 1, idle + 1), now),
            "used lately"
        );
        let own = uid.own_budget(antispam_common::event::PATH_SENDMAIL);
        assert!(collectable(&own, &s(now, now), now));
        assert!(!collectable(&own, &s(now + 1, now), now));
    }
}
