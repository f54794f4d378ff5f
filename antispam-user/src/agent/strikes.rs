//! Repeat offenders: every refused connect by a rate limit or a block list is a strike against
//! the UID (or, for a cgroup limit, the container); enough strikes within the policy's window
//! make a suspension, longer each time (see `book`).

use std::time::SystemTime;

use antispam_common::{event::REASON_RATE_CGROUP, key::BUCKET_SHARED};

use super::{core::Core, events::Violation, operations::Trigger};
use crate::{audit::Actor, clock, control::Target, policy::Mode};

impl Core {
    pub fn violation(&mut self, v: Violation) {
        let enforced = self.shared.enforced();
        let Some(p) = enforced.policy.suspension_for(v.rule_id) else {
            return;
        };
        if enforced.policy.mode == Mode::Monitor {
            return;
        }
        let Some(target) = self.offender(&v) else {
            return;
        };
        if self.shared.operations().suspensions.contains_key(&target) {
            return;
        }
        let now = clock::unix_ms(SystemTime::now());
        let Some(verdict) = self.book.strike(&target, now, p) else {
            return;
        };
        let reason = format!(
            "{} refused connects within {} (suspension {} of this offender)",
            verdict.strikes,
            humantime::format_duration(p.window),
            verdict.level
        );
        let for_secs = Some(verdict.duration.as_secs().max(1));
        if let Err(e) =
            self.suspend_for(target, reason, for_secs, &Actor::agent(), Trigger::Strikes)
        {
            self.errors
                .error("strikes", format!("automatic suspension failed: {e}"));
        }
    }

    /// Who a refusal counts against: the UID, or for a cgroup limit the cgroup the limit
    /// applies to (the matched one, not a sub-cgroup of it).
    fn offender(&self, v: &Violation) -> Option<Target> {
        if v.reason != REASON_RATE_CGROUP {
            return Some(Target::Uid(v.uid));
        }
        let bucket = self
            .shared
            .assignments()
            .get(&v.cgroup_id)
            .map(|a| a.rule.bucket)
            .filter(|b| *b != 0 && b & BUCKET_SHARED == 0)
            .unwrap_or(v.cgroup_id);
        self.shared.cgroups.name(bucket).map(Target::Cgroup)
    }
}
