//! The policy file as written: serde structures that keep the span of every value a later check
//! may need to point at. `deny_unknown_fields` turns a typo into an error with a location.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// "enforce" (default) or "monitor".
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
    /// Destination ports that are SMTP; default [25, 465, 587, 2525].
    #[serde(default)]
    pub ports: Option<Spanned<Vec<Spanned<i64>>>>,
    /// The rate of every UID no rule names; default "30/minute", burst = count.
    #[serde(default)]
    pub default: Option<Spanned<RawDefault>>,
    #[serde(default)]
    pub allow: Vec<Spanned<RawAllow>>,
    #[serde(default)]
    pub limit: Vec<Spanned<RawLimit>>,
    #[serde(default)]
    pub block: Vec<Spanned<RawBlock>>,
    /// Automatic suspension of repeat offenders; none when absent.
    #[serde(default)]
    pub suspension: Option<Spanned<RawSuspension>>,
    /// Who may break glass and the kill switch: signed requests.
    #[serde(default)]
    pub break_glass: Option<Spanned<RawBreakGlass>>,
    /// "owner" (default): subordinate UIDs (`/etc/subuid`) are charged to their owner;
    /// "separate": each is charged as itself.
    #[serde(default)]
    pub subordinate_uids: Option<Spanned<String>>,
    /// The local MTA's submission programs; the defaults of Postfix, Exim and OpenSMTPD when
    /// absent.
    #[serde(default)]
    pub sendmail: Option<Spanned<RawSendmail>>,
    /// How the MTA policy service answers and what it records; defaults when absent.
    #[serde(default)]
    pub mta: Option<Spanned<RawMta>>,
    /// `[tenant.NAME]`: budgets shared by every host of a fleet.
    #[serde(default)]
    pub tenant: std::collections::BTreeMap<String, Spanned<RawTenant>>,
}

/// `[tenant.NAME]`: a budget for the whole fleet, leased to each host from the fleet store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    /// The fleet's budget: every host together.
    pub rate: Spanned<String>,
    #[serde(default)]
    pub burst: Option<Spanned<i64>>,
    /// This host's budget while it holds no lease (the store cannot be reached).
    pub local_rate: Spanned<String>,
    #[serde(default)]
    pub local_burst: Option<Spanned<i64>>,
}

/// `[mta]`: the policy service the local MTA consults for every message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMta {
    /// "temporary" (default: 4xx, the MTA or the client keeps the message and retries) or
    /// "permanent" (5xx: the message is returned to its sender).
    #[serde(default)]
    pub refusal: Option<Spanned<String>>,
    /// Full sender and recipient addresses in the message records (default false: domains
    /// only).
    #[serde(default)]
    pub record_addresses: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSendmail {
    /// Absolute paths of the privileged programs through which mail enters the local MTA's
    /// queue; each execution by a task is one submitted message.
    pub programs: Spanned<Vec<Spanned<String>>>,
}

/// `[default.path]` / `[limit.path]`: mail paths with a budget of their own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    #[serde(default)]
    pub direct: Option<Spanned<RawBudget>>,
    #[serde(default)]
    pub sendmail: Option<Spanned<RawBudget>>,
    #[serde(default)]
    pub local_smtp: Option<Spanned<RawBudget>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub rate: Spanned<String>,
    #[serde(default)]
    pub burst: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreakGlass {
    /// Break-glass requests, approvals and revocations and the kill switch must carry an SSH
    /// signature by a key in `allowed_signers`; default false.
    #[serde(default)]
    pub require_signatures: Option<Spanned<bool>>,
    /// ssh-keygen's allowed signers file (absolute path): `principals keytype key`, one a line.
    #[serde(default)]
    pub allowed_signers: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSuspension {
    /// Refused connects (rate limits, block lists) within `window` that make a suspension.
    pub strikes: Spanned<i64>,
    pub window: Spanned<String>,
    /// The first suspension lasts durations[0], the next durations[1]…; the last repeats.
    pub durations: Spanned<Vec<Spanned<String>>>,
    /// After this long without a suspension, an offender's level drops by one. Default "7d".
    #[serde(default)]
    pub forget_after: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDefault {
    pub rate: Spanned<String>,
    #[serde(default)]
    pub burst: Option<Spanned<i64>>,
    /// Paths with a default budget of their own instead of `rate`.
    #[serde(default)]
    pub path: Option<Spanned<RawPaths>>,
    /// Messages every UID may hand the local MTA (the MTA policy service counts them); none
    /// when absent.
    #[serde(default)]
    pub messages: Option<Spanned<String>>,
    /// Recipients of those messages, each counting one.
    #[serde(default)]
    pub recipients: Option<Spanned<String>>,
}

/// A user: a name, a number, or a range "a-b" of numbers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawUser {
    Number(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllow {
    #[serde(default)]
    pub users: Vec<Spanned<RawUser>>,
    #[serde(default)]
    pub cgroups: Vec<Spanned<String>>,
    #[serde(default)]
    pub destinations: Vec<Spanned<String>>,
    /// Leave out user names that do not exist on this host instead of refusing the policy
    /// (for shared policies naming MTA users that only some hosts have). Default false.
    #[serde(default)]
    pub skip_unknown_users: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    #[serde(default)]
    pub users: Vec<Spanned<RawUser>>,
    #[serde(default)]
    pub cgroups: Vec<Spanned<String>>,
    /// SASL login names (glob patterns) of the MTA's authenticated clients: a key of their own
    /// for the MTA policy service's `messages` and `recipients`.
    #[serde(default)]
    pub sasl_users: Vec<Spanned<String>>,
    /// Connections and submissions; required when the rule names users or cgroups.
    #[serde(default)]
    pub rate: Option<Spanned<String>>,
    #[serde(default)]
    pub burst: Option<Spanned<i64>>,
    /// Messages through the local MTA (policy service); the `[default]` one when absent.
    #[serde(default)]
    pub messages: Option<Spanned<String>>,
    /// Recipients of those messages; the `[default]` one when absent.
    #[serde(default)]
    pub recipients: Option<Spanned<String>>,
    /// As for `[[allow]]`.
    #[serde(default)]
    pub skip_unknown_users: bool,
    /// All cgroups this rule covers draw on one common budget instead of one each.
    #[serde(default)]
    pub shared: Option<Spanned<bool>>,
    /// A cgroup matched below another match of this rule gets a budget of its own instead of
    /// drawing on the topmost match's. Default false.
    #[serde(default)]
    pub nested_budgets: bool,
    /// Strikes and suspensions for refusals by this rule, instead of the top-level section.
    #[serde(default)]
    pub suspension: Option<Spanned<RawSuspension>>,
    /// Paths with a budget of their own under this rule instead of `rate`.
    #[serde(default)]
    pub path: Option<Spanned<RawPaths>>,
    /// A `[tenant.NAME]` whose fleet budget the rule's users or cgroups also spend.
    #[serde(default)]
    pub tenant: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlock {
    #[serde(default)]
    pub destinations: Vec<Spanned<String>>,
    /// Files of one CIDR or address a line; `#` and `;` start comments.
    #[serde(default)]
    pub files: Vec<Spanned<String>>,
    /// As for `[[limit]]`.
    #[serde(default)]
    pub suspension: Option<Spanned<RawSuspension>>,
}
