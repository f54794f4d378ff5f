//! Operators' actions on the running agent: suspensions and the kill switch. The main loop owns
//! the maps and calls these; every action and every refusal is audited with who asked.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use antispam_common::{
    config::FLAG_KILL_SWITCH,
    key::{
        KeyId, Suspension, BUCKET_SHARED, KIND_CGROUP, KIND_UID, SUSPEND_MANUAL, SUSPEND_STRIKES,
    },
};
use serde_json::json;

use crate::{
    cli::run::Control,
    control::{Message, Peer, Request, Response, Target},
    events::Violation,
    strikes,
};

/// CLOCK_MONOTONIC now, in nanoseconds (the kernel programs' clock).
pub fn mono_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

pub struct SuspensionEntry {
    pub reason: String,
    pub by: String,
    pub since: SystemTime,
    pub until: Option<SystemTime>,
    /// The kernel keys this suspension wrote: the UID, or the cgroup and its descendants.
    pub keys: Vec<KeyId>,
}

pub struct KillSwitch {
    pub reason: String,
    pub by: String,
    pub since: SystemTime,
}

/// What operators have set, for status and metrics.
#[derive(Default)]
pub struct Operations {
    pub suspensions: BTreeMap<Target, SuspensionEntry>,
    pub kill_switch: Option<KillSwitch>,
    /// Suspensions set since the start, by trigger ("manual", "strikes").
    pub suspensions_total: BTreeMap<String, u64>,
    pub break_glass: crate::breakglass::BreakGlass,
}

fn who(peer: &Peer) -> serde_json::Value {
    json!({"user": peer.user, "uid": peer.uid, "pid": peer.pid})
}

fn ts(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Control<'_> {
    pub fn handle(&mut self, msg: Message) {
        match msg {
            Message::Denied { peer, why } => {
                self.audit("control_denied", json!({"by": who(&peer), "why": why}));
            }
            Message::Request { req, peer, reply } => {
                if matches!(req, Request::BreakGlassList) {
                    let _ = reply.send(Response {
                        ok: true,
                        message: String::new(),
                        data: Some(self.break_glass_list()),
                    });
                    return;
                }
                let answer = match req {
                    Request::Suspend {
                        target,
                        reason,
                        for_secs,
                    } => self.suspend(target, reason, for_secs, &peer, "manual"),
                    Request::Unsuspend { target, reason } => {
                        self.unsuspend(target, &reason, &peer.user, Some(&peer))
                    }
                    Request::KillSwitch { on, reason } => self.kill_switch(on, reason, &peer),
                    Request::BreakGlassAsk {
                        target,
                        reason,
                        ttl_secs,
                    } => self.break_glass_request(target, reason, ttl_secs, &peer),
                    Request::BreakGlassApprove { id } => self.break_glass_approve(&id, &peer),
                    Request::BreakGlassRevoke { id, reason } => {
                        self.break_glass_revoke(&id, &reason, &peer)
                    }
                    Request::BreakGlassList => unreachable!("answered above"),
                    Request::Uninstall { reason } => self.uninstall(&reason, &peer),
                };
                let answer = match answer {
                    Ok(message) => Response {
                        ok: true,
                        message,
                        data: None,
                    },
                    Err(message) => Response::refused(message),
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// The kernel keys of a target: a UID, or a cgroup with all its descendants.
    pub(crate) fn keys_of(&self, target: &Target) -> Result<Vec<KeyId>, String> {
        match target {
            Target::Uid(u) => Ok(vec![KeyId::uid(*u)]),
            Target::Cgroup(path) => {
                let w = self
                    .watcher
                    .as_deref()
                    .ok_or("the cgroup tree is not followed; suspend by UID")?;
                let prefix = format!("{}/", path.trim_end_matches('/'));
                let keys: Vec<KeyId> = w
                    .tree()
                    .into_iter()
                    .filter(|(p, _)| p == path || p.starts_with(&prefix))
                    .map(|(_, id)| KeyId::cgroup(id))
                    .collect();
                if keys.is_empty() {
                    return Err(format!(
                        "no cgroup {path} under the attach point {}",
                        self.shared.attach_cgroup
                    ));
                }
                Ok(keys)
            }
        }
    }

    fn suspend(
        &mut self,
        target: Target,
        reason: String,
        for_secs: Option<u64>,
        peer: &Peer,
        trigger: &str,
    ) -> Result<String, String> {
        if reason.trim().is_empty() {
            return Err("a reason is required".into());
        }
        let keys = self.keys_of(&target)?;
        let until_ns = for_secs.map_or(0, |s| mono_now_ns() + s.saturating_mul(1_000_000_000));
        let s = Suspension {
            until_ns,
            kind: if trigger == "strikes" {
                SUSPEND_STRIKES
            } else {
                SUSPEND_MANUAL
            },
            _pad: 0,
        };
        for k in &keys {
            self.maps.suspend(*k, s).map_err(|e| e.to_string())?;
        }
        // Sessions already open end now (their packets are dropped by the egress program too,
        // in case this fails).
        let ended = {
            let ports = self.shared.enforced().policy.ports.clone();
            let uids: Vec<u32> = keys
                .iter()
                .filter(|k| k.kind == KIND_UID)
                .map(|k| k.id as u32)
                .collect();
            let cgroups: Vec<u64> = keys
                .iter()
                .filter(|k| k.kind == KIND_CGROUP)
                .map(|k| k.id)
                .collect();
            let pick = |uid: u32, cgroup: Option<u64>| {
                uids.contains(&uid) || cgroup.is_some_and(|c| cgroups.contains(&c))
            };
            let sel = crate::sockdiag::Selector {
                ports: &ports,
                pick: &pick,
            };
            match crate::sockdiag::end_sessions(&sel) {
                Ok(n) => Some(n),
                Err(e) => {
                    log::warn!("could not end the open SMTP sessions of {target} ({e}); their packets are dropped");
                    None
                }
            }
        };
        let sessions =
            ended.map_or_else(String::new, |n| format!("; {n} open SMTP session(s) ended"));
        let now = SystemTime::now();
        let until = for_secs.map(|s| now + Duration::from_secs(s));
        let message = match until {
            Some(u) => format!(
                "suspended {target} until {} ({} s): {reason}{sessions}",
                ts(u),
                for_secs.unwrap_or(0)
            ),
            None => format!("suspended {target} until lifted: {reason}{sessions}"),
        };
        self.audit(
            "suspend",
            json!({
                "target": target, "reason": reason, "by": who(peer), "trigger": trigger,
                "for_secs": for_secs, "until": until.map(ts), "kernel_keys": keys.len(),
                "sessions_ended": ended,
            }),
        );
        log::warn!("{message} (by {})", peer.user);
        self.book.suspensions.retain(|x| x.target != target);
        self.book.suspensions.push(strikes::Saved {
            target: target.clone(),
            reason: reason.clone(),
            by: peer.user.clone(),
            trigger: trigger.to_string(),
            since_ms: strikes::unix_ms(now),
            until_ms: until.map(strikes::unix_ms),
        });
        self.book.dirty = true;
        self.save_book();
        let mut ops = self.shared.operations();
        *ops.suspensions_total
            .entry(trigger.to_string())
            .or_default() += 1;
        ops.suspensions.insert(
            target,
            SuspensionEntry {
                reason,
                by: peer.user.clone(),
                since: now,
                until,
                keys,
            },
        );
        Ok(message)
    }

    /// Lifts a suspension (by an operator, or `by = "expiry"` when its time is up).
    pub fn unsuspend(
        &mut self,
        target: Target,
        reason: &str,
        by: &str,
        peer: Option<&Peer>,
    ) -> Result<String, String> {
        let entry = self.shared.operations().suspensions.remove(&target);
        let Some(entry) = entry else {
            return Err(format!("{target} is not suspended"));
        };
        for k in &entry.keys {
            self.maps.unsuspend(*k).map_err(|e| e.to_string())?;
        }
        let by_json = peer.map_or_else(|| json!({"user": by}), who);
        self.audit(
            if peer.is_some() { "unsuspend" } else { "suspension_expired" },
            json!({
                "target": target, "reason": reason, "by": by_json,
                "suspended_since": ts(entry.since), "suspended_by": entry.by, "suspension_reason": entry.reason,
                "held_secs": entry.since.elapsed().map(|d| d.as_secs()).unwrap_or(0),
            }),
        );
        self.book.suspensions.retain(|x| x.target != target);
        self.book.dirty = true;
        self.save_book();
        let message = format!("lifted the suspension of {target}: {reason}");
        log::warn!("{message} (by {by})");
        Ok(message)
    }

    /// Lifts the suspensions whose time is up (the kernel already ignores them).
    pub fn expire(&mut self) {
        let now = SystemTime::now();
        if let Some((window, forget)) = self.shared.enforced().policy.longest_memory() {
            self.book.prune(strikes::unix_ms(now), window, forget);
        }
        let due: Vec<Target> = self
            .shared
            .operations()
            .suspensions
            .iter()
            .filter(|(_, e)| e.until.is_some_and(|u| u <= now))
            .map(|(t, _)| t.clone())
            .collect();
        for t in due {
            if let Err(e) = self.unsuspend(t, "expired", "expiry", None) {
                log::error!("expiring a suspension: {e}");
            }
        }
    }

    /// A cgroup appeared: if an ancestor (or itself) is suspended, so is it.
    pub fn suspend_if_below_suspended(&mut self, path: &str, id: u64) {
        let mut ops = self.shared.operations();
        let hit = ops.suspensions.iter_mut().find(|(t, _)| match t {
            Target::Cgroup(p) => {
                path == p || path.starts_with(&format!("{}/", p.trim_end_matches('/')))
            }
            Target::Uid(_) => false,
        });
        if let Some((_, entry)) = hit {
            let until_ns = entry
                .until
                .and_then(|u| u.duration_since(SystemTime::now()).ok())
                .map_or(0, |d| mono_now_ns() + d.as_nanos() as u64);
            entry.keys.push(KeyId::cgroup(id));
            drop(ops);
            if let Err(e) = self.maps.suspend(
                KeyId::cgroup(id),
                Suspension {
                    until_ns,
                    kind: SUSPEND_MANUAL,
                    _pad: 0,
                },
            ) {
                log::error!("suspending new cgroup {path}: {e}");
            }
        }
    }

    fn kill_switch(&mut self, on: bool, reason: String, peer: &Peer) -> Result<String, String> {
        if reason.trim().is_empty() {
            return Err("a reason is required".into());
        }
        self.maps
            .set_flag(FLAG_KILL_SWITCH, on)
            .map_err(|e| e.to_string())?;
        let ended = if on {
            self.end_sessions_for_kill_switch()
        } else {
            None
        };
        let now = SystemTime::now();
        let was = {
            let mut ops = self.shared.operations();
            let was = ops.kill_switch.take();
            if on {
                ops.kill_switch = Some(KillSwitch {
                    reason: reason.clone(),
                    by: peer.user.clone(),
                    since: now,
                });
            }
            was
        };
        self.book.kill_switch = on.then(|| strikes::SavedKillSwitch {
            reason: reason.clone(),
            by: peer.user.clone(),
            since_ms: strikes::unix_ms(now),
        });
        self.book.dirty = true;
        self.save_book();
        self.audit(
            "kill_switch",
            json!({
                "on": on, "reason": reason, "by": who(peer), "sessions_ended": ended,
                "was_on_since": was.as_ref().map(|k| ts(k.since)), "was_set_by": was.as_ref().map(|k| k.by.clone()),
            }),
        );
        let message = if on {
            let sessions =
                ended.map_or_else(String::new, |n| format!("; {n} open SMTP session(s) ended"));
            format!("kill switch ON: all SMTP refused except allow-listed UIDs: {reason}{sessions}")
        } else {
            format!("kill switch off: {reason}")
        };
        log::warn!("{message} (by {})", peer.user);
        Ok(message)
    }

    /// Unpins everything (the programs detach once this agent lets go of them) and stops.
    fn uninstall(&mut self, reason: &str, peer: &Peer) -> Result<String, String> {
        if reason.trim().is_empty() {
            return Err("a reason is required".into());
        }
        let n = crate::pins::remove(&self.pin_dir)
            .map_err(|e| format!("removing {}: {e}", self.pin_dir.display()))?;
        self.audit(
            "uninstall",
            json!({"reason": reason, "by": who(peer), "pin_dir": self.pin_dir, "unpinned": n}),
        );
        self.quit = Some("uninstall");
        let message = format!(
            "uninstalled from cgroup {}: {n} pinned objects removed from {}; the agent stops",
            self.shared.attach_cgroup,
            self.pin_dir.display()
        );
        log::warn!("{message} (by {}): {reason}", peer.user);
        Ok(message)
    }

    /// After a restart: what the previous agent left in the kernel and this one did not restore
    /// (it ended meanwhile) goes, and the runtime flags match the state restored.
    pub fn prune_runtime(&mut self) {
        let (suspended, overridden, kill_switch) = {
            let ops = self.shared.operations();
            let s: std::collections::HashSet<KeyId> = ops
                .suspensions
                .values()
                .flat_map(|e| e.keys.iter().copied())
                .collect();
            let o: std::collections::HashSet<KeyId> = ops
                .break_glass
                .active
                .values()
                .flat_map(|g| g.keys.iter().copied())
                .collect();
            (s, o, ops.kill_switch.is_some())
        };
        if let Err(e) = self
            .maps
            .prune_runtime(&suspended, &overridden, kill_switch)
        {
            log::error!("clearing what the previous agent left: {e}");
        }
    }

    /// The kill switch also ends the SMTP sessions already open, of every process it would now
    /// refuse: in a cgroup under the attach point, not of an allow-listed UID, not under a
    /// break-glass override. `None` if sock_diag failed (the sessions then go on).
    fn end_sessions_for_kill_switch(&self) -> Option<usize> {
        let enforced = self.shared.enforced();
        let allowed: std::collections::HashSet<u32> = enforced
            .compiled
            .uid_rules
            .iter()
            .filter(|(_, r)| r.action == antispam_common::rule::ACTION_ALLOW)
            .map(|(u, _)| *u)
            .collect();
        let under: std::collections::HashSet<u64> = match self.watcher.as_deref() {
            Some(w) => w.tree().into_iter().map(|(_, id)| id).collect(),
            None => return Some(0),
        };
        let overridden: std::collections::HashSet<KeyId> = self
            .shared
            .operations()
            .break_glass
            .active
            .values()
            .flat_map(|g| g.keys.iter().copied())
            .collect();
        let pick = |uid: u32, cgroup: Option<u64>| {
            cgroup.is_some_and(|c| under.contains(&c) && !overridden.contains(&KeyId::cgroup(c)))
                && !allowed.contains(&uid)
                && !overridden.contains(&KeyId::uid(uid))
        };
        let sel = crate::sockdiag::Selector {
            ports: &enforced.policy.ports,
            pick: &pick,
        };
        match crate::sockdiag::end_sessions(&sel) {
            Ok(n) => Some(n),
            Err(e) => {
                log::warn!("kill switch: could not end the open SMTP sessions ({e})");
                None
            }
        }
    }

    /// Writes the offence book if it changed; a failure is logged (enforcement goes on).
    pub fn save_book(&mut self) {
        if self.book.dirty {
            if let Err(e) = self.book.save(&self.book_path) {
                log::error!("saving the offence history: {e}");
            }
        }
    }

    /// A refused connect: a strike against the UID, or against the container for a cgroup
    /// limit. Enough strikes make a suspension (the policy's `[suspension]`).
    pub fn violation(&mut self, v: Violation) {
        let enforced = self.shared.enforced();
        let Some(p) = enforced.policy.suspension_for(v.rule_id) else {
            return;
        };
        if enforced.policy.mode == crate::policy::Mode::Monitor {
            return;
        }
        let target = if v.reason == antispam_common::event::REASON_RATE_CGROUP {
            // The cgroup the limit applies to: the matched one, not a sub-cgroup of it.
            let bucket = self
                .shared
                .assignments()
                .get(&v.cgroup_id)
                .map(|a| a.rule.bucket)
                .filter(|b| *b != 0 && b & BUCKET_SHARED == 0)
                .unwrap_or(v.cgroup_id);
            match self.shared.cgroups.name(bucket) {
                Some(path) => Target::Cgroup(path),
                None => return,
            }
        } else {
            Target::Uid(v.uid)
        };
        if self.shared.operations().suspensions.contains_key(&target) {
            return;
        }
        let now = SystemTime::now();
        let Some(verdict) = self.book.strike(&target, strikes::unix_ms(now), p) else {
            return;
        };
        let reason = format!(
            "{} refused connects within {} (suspension {} of this offender)",
            verdict.strikes,
            humantime::format_duration(p.window),
            verdict.level
        );
        let system = Peer {
            uid: 0,
            gid: 0,
            pid: Some(std::process::id() as i32),
            user: "antispam".into(),
            login_uid: None,
        };
        if let Err(e) = self.suspend(
            target,
            reason,
            Some(verdict.duration.as_secs().max(1)),
            &system,
            "strikes",
        ) {
            log::error!("automatic suspension failed: {e}");
        }
    }

    /// Puts back the kill switch and the suspensions the previous agent left in force (from
    /// the offence book).
    pub fn restore(&mut self) {
        let now = SystemTime::now();
        if let Some(k) = self.book.kill_switch.clone() {
            if let Err(e) = self.maps.set_flag(FLAG_KILL_SWITCH, true) {
                log::error!("restoring the kill switch: {e}");
            }
            let since = std::time::UNIX_EPOCH + Duration::from_millis(k.since_ms);
            self.audit(
                "kill_switch_restored",
                json!({"reason": k.reason, "by": k.by, "since": ts(since)}),
            );
            log::warn!(
                "the kill switch is still ON ({}; set by {})",
                k.reason,
                k.by
            );
            self.shared.operations().kill_switch = Some(KillSwitch {
                reason: k.reason,
                by: k.by,
                since,
            });
        }
        let saved = std::mem::take(&mut self.book.suspensions);
        for s in saved {
            let remaining = s
                .until_ms
                .map(|u| u.saturating_sub(strikes::unix_ms(now)) / 1000);
            if remaining == Some(0) {
                self.audit("suspension_expired", json!({"target": s.target, "reason": "expired while the agent was stopped", "by": {"user": "expiry"}}));
                continue;
            }
            let keys = match self.keys_of(&s.target) {
                Ok(k) => k,
                Err(e) => {
                    log::warn!("not restoring the suspension of {}: {e}", s.target);
                    continue;
                }
            };
            let until_ns = remaining.map_or(0, |r| mono_now_ns() + r * 1_000_000_000);
            let kind = if s.trigger == "strikes" {
                SUSPEND_STRIKES
            } else {
                SUSPEND_MANUAL
            };
            for k in &keys {
                if let Err(e) = self.maps.suspend(
                    *k,
                    Suspension {
                        until_ns,
                        kind,
                        _pad: 0,
                    },
                ) {
                    log::error!("restoring the suspension of {}: {e}", s.target);
                }
            }
            let until = s
                .until_ms
                .map(|u| std::time::UNIX_EPOCH + Duration::from_millis(u));
            let since = std::time::UNIX_EPOCH + Duration::from_millis(s.since_ms);
            self.audit(
                "suspension_restored",
                json!({"target": s.target, "reason": s.reason, "by": {"user": s.by}, "trigger": s.trigger, "until": until.map(ts)}),
            );
            log::warn!("restored the suspension of {} ({})", s.target, s.reason);
            self.shared.operations().suspensions.insert(
                s.target.clone(),
                SuspensionEntry {
                    reason: s.reason.clone(),
                    by: s.by.clone(),
                    since,
                    until,
                    keys,
                },
            );
            self.book.suspensions.push(s);
        }
        self.book.dirty = true;
        self.save_book();
    }
}
