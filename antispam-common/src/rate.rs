//! Rate-limit arithmetic: GCRA, the "virtual scheduling" form of a token bucket.
//!
//! A bucket is one `u64`, its theoretical arrival time (TAT) in nanoseconds. A connect at `now`
//! conforms when `max(tat, now) - now <= tolerance`; it then moves the TAT one emission interval
//! on. The kernel applies [`gcra`] inside a compare-and-swap loop on the map value, so concurrent
//! connects on different CPUs never share a token and no lock is taken.

/// A rate as GCRA parameters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    /// Nanoseconds per token: the period divided by the count. 0 means "no limit".
    pub interval_ns: u64,
    /// How far the TAT may run ahead of now: `(burst - 1) * interval_ns`.
    pub tolerance_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Rate>() == 16);

crate::user_pod!(Rate);

impl Rate {
    /// `count` connects per `period_ns`, with up to `burst` at once. `None` if any is zero or the
    /// numbers overflow.
    pub const fn new(count: u64, period_ns: u64, burst: u64) -> Option<Rate> {
        if count == 0 || period_ns == 0 || burst == 0 {
            return None;
        }
        let interval_ns = period_ns / count;
        if interval_ns == 0 {
            return None;
        }
        match interval_ns.checked_mul(burst - 1) {
            Some(tolerance_ns) => Some(Rate {
                interval_ns,
                tolerance_ns,
            }),
            None => None,
        }
    }

    /// The number of connects allowed at once on a full bucket.
    pub const fn burst(&self) -> u64 {
        match self.tolerance_ns.checked_div(self.interval_ns) {
            Some(n) => n + 1,
            None => 0,
        }
    }
}

/// The GCRA decision for one connect at `now` against a bucket whose TAT is `tat`.
///
/// Returns the new TAT when the connect conforms, `None` when it must be refused (the bucket is
/// then left as it is: refusals do not push the TAT further out, so a client hammering a full
/// bucket gets its next token on time).
#[inline(always)]
pub const fn gcra(tat: u64, now: u64, rate: &Rate) -> Option<u64> {
    if rate.interval_ns == 0 {
        return Some(tat);
    }
    let start = if tat > now { tat } else { now };
    if start - now > rate.tolerance_ns {
        None
    } else {
        Some(start.saturating_add(rate.interval_ns))
    }
}

/// The GCRA decision for `n` tokens at once (a message with `n` recipients) at `now`: the
/// new TAT when all `n` conform, `None` (bucket untouched) otherwise. `gcra_n(t, now, r, 1)`
/// is `gcra(t, now, r)`; `n = 0` always conforms and leaves the TAT as it is.
pub const fn gcra_n(tat: u64, now: u64, rate: &Rate, n: u64) -> Option<u64> {
    if rate.interval_ns == 0 || n == 0 {
        return Some(tat);
    }
    let start = if tat > now { tat } else { now };
    // The last of the n tokens is taken at start + (n - 1) * interval: it must conform.
    let last = match rate.interval_ns.checked_mul(n - 1) {
        Some(extra) => start.saturating_add(extra),
        None => return None,
    };
    if last - now > rate.tolerance_ns {
        None
    } else {
        Some(last.saturating_add(rate.interval_ns))
    }
}

/// Nanoseconds from `now` until `n` tokens conform (0: now; `None`: never, as `n` is more than
/// the burst).
pub const fn wait_for(tat: u64, now: u64, rate: &Rate, n: u64) -> Option<u64> {
    if rate.interval_ns == 0 || n == 0 {
        return Some(0);
    }
    if n > rate.burst() {
        return None;
    }
    let start = if tat > now { tat } else { now };
    let last = start + rate.interval_ns * (n - 1);
    Some((last - now).saturating_sub(rate.tolerance_ns))
}

/// How many connects a bucket with `tat` can take at `now` (for status displays).
pub const fn available(tat: u64, now: u64, rate: &Rate) -> u64 {
    if rate.interval_ns == 0 {
        return u64::MAX;
    }
    let ahead = tat.saturating_sub(now);
    if ahead > rate.tolerance_ns + rate.interval_ns {
        return 0;
    }
    (rate.tolerance_ns + rate.interval_ns - ahead) / rate.interval_ns
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn run(rate: &Rate, tat: &mut u64, now: u64) -> bool {
        match gcra(*tat, now, rate) {
            Some(t) => {
                *tat = t;
                true
            }
            None => false,
        }
    }

    #[test]
    fn burst_then_refuse_then_refill() {
        // 2 per second, burst 3.
        let rate = Rate::new(2, SEC, 3).unwrap();
        assert_eq!(rate.interval_ns, SEC / 2);
        assert_eq!(rate.burst(), 3);
        let mut tat = 0;
        let t0 = 100 * SEC;
        for i in 0..3 {
            assert!(run(&rate, &mut tat, t0), "connect {i} of the burst");
        }
        assert!(!run(&rate, &mut tat, t0), "4th connect at once");
        assert!(
            !run(&rate, &mut tat, t0 + SEC / 2 - 1),
            "just before a token is back"
        );
        assert!(
            run(&rate, &mut tat, t0 + SEC / 2),
            "one token after one interval"
        );
        assert!(!run(&rate, &mut tat, t0 + SEC / 2));
        // After a long quiet period the bucket is full again, never fuller.
        let later = t0 + 3600 * SEC;
        for _ in 0..3 {
            assert!(run(&rate, &mut tat, later));
        }
        assert!(!run(&rate, &mut tat, later));
    }

    #[test]
    fn refusals_do_not_push_the_tat() {
        let rate = Rate::new(1, SEC, 1).unwrap();
        let mut tat = 0;
        assert!(run(&rate, &mut tat, SEC));
        let before = tat;
        for k in 0..1000 {
            assert!(!run(&rate, &mut tat, SEC + k));
        }
        assert_eq!(tat, before);
        assert!(run(&rate, &mut tat, 2 * SEC));
    }

    #[test]
    fn long_run_rate_is_exact() {
        // 30/minute, burst 30, hammered every 10 ms for 10 minutes: 30 + 10 * 30 allowed.
        let rate = Rate::new(30, 60 * SEC, 30).unwrap();
        let mut tat = 0;
        let start = 5 * SEC;
        let mut allowed = 0;
        let mut t = start;
        while t <= start + 600 * SEC {
            if run(&rate, &mut tat, t) {
                allowed += 1;
            }
            t += SEC / 100;
        }
        assert_eq!(allowed, 30 + 300);
    }

    #[test]
    fn invalid_rates() {
        assert!(Rate::new(0, SEC, 1).is_none());
        assert!(Rate::new(1, 0, 1).is_none());
        assert!(Rate::new(1, SEC, 0).is_none());
        assert!(
            Rate::new(2 * SEC, SEC, 1).is_none(),
            "finer than a nanosecond"
        );
        assert!(
            Rate::new(1, u64::MAX, u64::MAX).is_none(),
            "tolerance overflows"
        );
    }

    #[test]
    fn unlimited_rate_always_conforms() {
        let rate = Rate::default();
        assert_eq!(gcra(7, 1, &rate), Some(7));
        assert_eq!(available(7, 1, &rate), u64::MAX);
    }

    #[test]
    fn available_counts_tokens() {
        let rate = Rate::new(1, SEC, 5).unwrap();
        assert_eq!(available(0, 10 * SEC, &rate), 5);
        let mut tat = 0;
        run(&rate, &mut tat, 10 * SEC);
        run(&rate, &mut tat, 10 * SEC);
        assert_eq!(available(tat, 10 * SEC, &rate), 3);
        assert_eq!(available(tat, 12 * SEC, &rate), 5);
    }

    #[test]
    fn n_tokens_at_once() {
        // 5 per second, burst 5: 3 + 2 fit, then nothing until a token is back.
        let rate = Rate::new(5, SEC, 5).unwrap();
        let t0 = 100 * SEC;
        let tat = gcra_n(0, t0, &rate, 3).unwrap();
        assert_eq!(available(tat, t0, &rate), 2);
        assert_eq!(gcra_n(tat, t0, &rate, 3), None, "3 more do not fit");
        assert_eq!(wait_for(tat, t0, &rate, 3), Some(SEC / 5));
        let tat = gcra_n(tat, t0, &rate, 2).unwrap();
        assert_eq!(available(tat, t0, &rate), 0);
        assert_eq!(wait_for(tat, t0, &rate, 1), Some(SEC / 5));
        assert_eq!(
            wait_for(tat, t0, &rate, 6),
            None,
            "more than the burst: never"
        );
        assert_eq!(
            gcra_n(tat, t0 + SEC / 5, &rate, 1),
            gcra(tat, t0 + SEC / 5, &rate)
        );
        assert_eq!(gcra_n(tat, t0, &rate, 0), Some(tat));
        // One at a time is exactly gcra().
        let mut a = 0;
        let mut b = 0;
        for k in 0..50 {
            let now = t0 + k * SEC / 20;
            let x = gcra(a, now, &rate);
            assert_eq!(x, gcra_n(b, now, &rate, 1));
            if let Some(t) = x {
                a = t;
                b = t;
            }
        }
        assert_eq!(gcra_n(0, t0, &rate, u64::MAX), None);
    }
}
