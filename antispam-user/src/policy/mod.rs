//! The policy: loading, validation and the checked model the rest of the agent uses.
//!
//! Every check happens here, once, before anything touches a map: a policy that loads is one the
//! kernel side can enforce. Problems carry file, line and column; all of them are reported, not
//! only the first (except for TOML syntax and structure errors, after which nothing can be read).

pub mod assign;
pub mod compile;
mod location;
mod raw;
mod structure;
mod values;

use std::{
    collections::BTreeSet,
    fmt,
    path::{Path, PathBuf},
};

use antispam_common::maps::UID_RULES_MAX;
use ipnet::IpNet;
pub use location::{Problem, Problems, Source};
use raw::{RawPolicy, RawUser};
use toml::Spanned;
pub use values::{RateSpec, UidRange};

/// The policy compiled into the binary, used when `run` is given no `--policy`.
pub const BUILTIN: &str = include_str!("default.toml");
/// Name of the built-in policy in messages.
pub const BUILTIN_NAME: &str = "<built-in policy>";
/// SMTP ports when a policy has no `ports` key.
pub const DEFAULT_PORTS: [u16; 4] = [25, 465, 587, 2525];
/// Rate when a policy has no `[default]` table.
pub const DEFAULT_RATE: &str = "30/minute";
/// The privileged programs through which mail enters the queue of Postfix (`postdrop`, setgid
/// postdrop, run by its `sendmail`), Exim (`exim4`, setuid root; its `sendmail` is a link to it)
/// and OpenSMTPD (`smtpctl`, setgid _smtpq), when a policy has no `[sendmail]` table. Programs
/// a host does not have are left out.
pub const DEFAULT_SENDMAIL_PROGRAMS: [&str; 4] = [
    "/usr/sbin/postdrop",
    "/usr/sbin/exim4",
    "/usr/sbin/exim",
    "/usr/sbin/smtpctl",
];

/// Budgets of their own for some mail paths (`[limit.path.NAME]`), by path code
/// (`antispam_common::event::PATH_*`): spent instead of the rule's `rate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathBudgets(pub [Option<RateSpec>; antispam_common::event::PATHS as usize]);

impl PathBudgets {
    /// (path name, rate) of every path with a budget of its own.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &RateSpec)> {
        self.0.iter().enumerate().filter_map(|(p, r)| {
            r.as_ref()
                .map(|r| (antispam_common::event::path_name(p as u32), r))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Monitor,
}

impl Mode {
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RuleKind {
    Allow,
    Limit,
    Block,
}

impl RuleKind {
    pub const fn name(self) -> &'static str {
        match self {
            RuleKind::Allow => "allow",
            RuleKind::Limit => "limit",
            RuleKind::Block => "block",
        }
    }
}

/// One `[[allow]]`, `[[limit]]` or `[[block]]` table, checked.
#[derive(Debug, Clone)]
pub struct Rule {
    /// 1-based over all rules in file order; 0 is the `[default]` rate. Reported in events.
    pub id: u32,
    pub kind: RuleKind,
    /// 0-based index among the rules of its kind, as in `limit[1]`.
    pub index: usize,
    /// Line of the table in the policy file.
    pub line: usize,
    pub uids: Vec<UidRange>,
    pub cgroups: Vec<glob::Pattern>,
    pub destinations: Vec<IpNet>,
    pub rate: Option<RateSpec>,
    /// `[[limit]]` only: the cgroups it covers share one budget.
    pub shared: bool,
    /// `[[limit]]` only: nested matches get budgets of their own.
    pub nested_budgets: bool,
    /// `[limit.suspension]` / `[block.suspension]`: this rule's own strikes and suspensions.
    pub suspension: Option<SuspensionPolicy>,
    /// `[limit.path.NAME]`: paths with a budget of their own.
    pub paths: PathBudgets,
    /// `[[limit]] sasl_users`: SASL login names this rule's message budgets apply to.
    pub sasl_users: Vec<glob::Pattern>,
    /// `messages`, `recipients`: budgets of the MTA policy service.
    pub messages: Option<RateSpec>,
    pub recipients: Option<RateSpec>,
    /// `[[limit]] tenant`: the `[tenant.NAME]` whose fleet budget it also spends.
    pub tenant: Option<String>,
}

impl Rule {
    pub fn name(&self) -> String {
        format!("{}[{}]", self.kind.name(), self.index)
    }
}

/// `[tenant.NAME]`: a budget shared by every host of a fleet (see `crate::fleet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub name: String,
    /// The fleet's budget, every host together.
    pub rate: RateSpec,
    /// This host's budget while it holds no lease.
    pub local: RateSpec,
    /// `antispam_common::tenant::tenant_key` of the name.
    pub key: u64,
}

/// Longest tenant name (it is a metric label and part of a fleet store key).
pub const TENANT_NAME_MAX: usize = 64;

/// `[break_glass] require_signatures`, `allowed_signers`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signatures {
    /// Break glass and the kill switch are refused without a signature by an allowed signer.
    pub required: bool,
    /// The allowed signers file (read at each signed request, so edits need no reload).
    pub allowed_signers: Option<PathBuf>,
}

/// A checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file it came from, or [`BUILTIN_NAME`].
    pub origin: String,
    pub mode: Mode,
    pub ports: BTreeSet<u16>,
    pub default_rate: RateSpec,
    pub rules: Vec<Rule>,
    /// Things that load but probably do not mean what was meant.
    pub warnings: Vec<Problem>,
    /// SHA-256 of the policy text, hex: recorded in the audit log at every load.
    pub sha256: String,
    /// Automatic suspension of repeat offenders (`[suspension]`).
    pub suspension: Option<SuspensionPolicy>,
    /// `[break_glass]`: signed operator requests.
    pub signatures: Signatures,
    /// `[default.path.NAME]`: paths with a default budget of their own.
    pub default_paths: PathBudgets,
    /// `[sendmail] programs`: the MTA's submission programs (absolute paths, maybe absent on
    /// this host).
    pub sendmail_programs: Vec<PathBuf>,
    /// `subordinate_uids = "owner"` (the default): subordinate UIDs are charged to their owner.
    pub charge_subordinate_uids: bool,
    /// `[default] messages`, `recipients`: the MTA policy service's budgets of every UID no
    /// rule gives its own.
    pub default_messages: Option<RateSpec>,
    pub default_recipients: Option<RateSpec>,
    /// `[mta]`.
    pub mta: MtaPolicy,
    /// Who vouched for the files it was read from (a signature checked by the [`FileCheck`] it
    /// was loaded with), None when nothing was checked.
    pub signed_by: Option<String>,
    /// `[tenant.NAME]`, by name.
    pub tenants: std::collections::BTreeMap<String, Tenant>,
}

impl Policy {
    /// Each tenant's kernel key and `local_rate`.
    pub fn tenant_locals(&self) -> Vec<(u64, antispam_common::rate::Rate)> {
        self.tenants
            .values()
            .map(|t| (t.key, t.local.gcra))
            .collect()
    }

    /// Each tenant's kernel key.
    pub fn tenant_keys(&self) -> Vec<u64> {
        self.tenants.values().map(|t| t.key).collect()
    }
}

/// A check of every file a policy is read from, before its content is used: the policy file and
/// each block list it names. The agent's (`antispam run --policy-signers`) wants an SSH
/// signature beside each file.
pub trait FileCheck {
    /// Who vouches for `data`, the content of the file `path` as read, or why it is refused.
    fn check(&self, path: &Path, data: &[u8]) -> Result<String, Box<dyn std::error::Error>>;
}

/// `[mta]`: how the policy service answers the MTA and what it records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MtaPolicy {
    /// `refusal = "permanent"`: refuse with 5xx (the message is returned to its sender) instead
    /// of 4xx (kept by the MTA or the client, and tried again).
    pub permanent: bool,
    /// `record_addresses = true`: full addresses in message records, not only domains.
    pub record_addresses: bool,
}

/// `[suspension]`: strikes within a window make a suspension, escalating through durations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuspensionPolicy {
    pub strikes: u32,
    pub window: std::time::Duration,
    pub durations: Vec<std::time::Duration>,
    pub forget_after: std::time::Duration,
}

/// `forget_after` when the policy does not say.
pub const DEFAULT_FORGET_AFTER: &str = "7d";

impl Policy {
    /// The suspension settings for a refusal by rule `rule_id` (0: the default rate): the
    /// rule's own section, else the top-level `[suspension]`, else none (no strikes).
    pub fn suspension_for(&self, rule_id: u32) -> Option<&SuspensionPolicy> {
        self.rules
            .iter()
            .find(|r| r.id == rule_id)
            .and_then(|r| r.suspension.as_ref())
            .or(self.suspension.as_ref())
    }

    /// How long the offence book must remember strikes and suspensions: the longest window and
    /// the longest `forget_after` over every suspension section. None if there is none.
    pub fn longest_memory(&self) -> Option<(std::time::Duration, std::time::Duration)> {
        self.suspension
            .iter()
            .chain(self.rules.iter().filter_map(|r| r.suspension.as_ref()))
            .map(|p| (p.window, p.forget_after))
            .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
    }

    /// The policy compiled into the binary.
    pub fn builtin() -> Policy {
        parse(BUILTIN_NAME, BUILTIN, None).expect("the built-in policy is valid (unit-tested)")
    }

    /// Reads and checks a policy file, every file read passing `check` first.
    pub fn load_checked(path: &Path, check: Option<&dyn FileCheck>) -> Result<Policy, Problems> {
        let text = std::fs::read(path).map_err(|e| {
            Problems(vec![Problem {
                file: path.display().to_string(),
                line: 1,
                column: 1,
                message: format!("cannot read policy: {e}"),
            }])
        })?;
        Policy::from_file_checked(path, &text, check)
    }

    /// [`Policy::from_file_checked`] without a check.
    #[cfg(test)]
    pub fn from_file(path: &Path, text: &[u8]) -> Result<Policy, Problems> {
        Self::from_file_checked(path, text, None)
    }

    /// Checks the content of the policy file `path`, read whole, every file read passing
    /// `check` first (the policy file's refusal is a problem at its first line, a block list's
    /// at its entry). A file with no setting at all (empty, blank, only comments) is refused: it
    /// would mean the built-in defaults without the operator's allow lists, and is what an
    /// editor's save leaves for an instant (truncate, then write).
    pub fn from_file_checked(
        path: &Path,
        text: &[u8],
        check: Option<&dyn FileCheck>,
    ) -> Result<Policy, Problems> {
        let name = path.display().to_string();
        let at_start = |message: String| {
            Problems(vec![Problem {
                file: name.clone(),
                line: 1,
                column: 1,
                message,
            }])
        };
        let text = std::str::from_utf8(text)
            .map_err(|e| at_start(format!("the policy is not UTF-8 text: {e}")))?;
        let settings = text
            .lines()
            .map(str::trim)
            .any(|l| !l.is_empty() && !l.starts_with('#'));
        if !settings {
            return Err(at_start(format!(
                "the policy file is empty ({} bytes, no setting): refused, the policy in force stays; an editor's save in progress leaves a file empty for a moment (write a new file and rename it over the old one to change it in one step)",
                text.len()
            )));
        }
        let signed_by = match check {
            Some(c) => Some(
                c.check(path, text.as_bytes())
                    .map_err(|why| at_start(format!("refused: {why}")))?,
            ),
            None => None,
        };
        let mut policy = parse_checked(&name, text, path.parent(), check)?;
        policy.signed_by = signed_by;
        Ok(policy)
    }

    /// The name of a rule id as reported in events and metrics.
    pub fn rule_name(&self, id: u32) -> String {
        if id == 0 {
            return "default".into();
        }
        self.rules
            .iter()
            .find(|r| r.id == id)
            .map_or_else(|| format!("rule#{id}"), Rule::name)
    }

    pub fn count(&self, kind: RuleKind) -> usize {
        self.rules.iter().filter(|r| r.kind == kind).count()
    }
}

impl fmt::Display for Policy {
    /// The one-line summary `check` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        write!(
            f,
            "{}: ok: mode {}, ports {}, default {}, {} allow, {} limit, {} block rules",
            self.origin,
            self.mode.name(),
            ports.join(","),
            self.default_rate,
            self.count(RuleKind::Allow),
            self.count(RuleKind::Limit),
            self.count(RuleKind::Block),
        )?;
        if !self.tenants.is_empty() {
            let names: Vec<&str> = self.tenants.keys().map(String::as_str).collect();
            write!(f, ", tenants {}", names.join(","))?;
        }
        Ok(())
    }
}

/// Checks a policy text. `base` is the directory relative `files` paths are resolved against.
pub fn parse(name: &str, text: &str, base: Option<&Path>) -> Result<Policy, Problems> {
    parse_checked(name, text, base, None)
}

/// [`parse`], every block list read passing `check` first.
fn parse_checked(
    name: &str,
    text: &str,
    base: Option<&Path>,
    check: Option<&dyn FileCheck>,
) -> Result<Policy, Problems> {
    let checked = structure::check(text);
    let plain = Source {
        name: name.to_string(),
        text,
        edits: None,
    };
    let mut problems: Vec<Problem> = checked
        .problems
        .iter()
        .map(|(span, message)| plain.problem(span.clone(), message.clone()))
        .collect();
    let Some(raw) = checked.raw else {
        return Err(Problems(problems));
    };
    // The semantic checks run too, on the text with its structural problems edited out, so
    // that one run names every problem; what they find in the edits' own text is not the file's.
    let edited = !problems.is_empty();
    let src = Source {
        name: name.to_string(),
        text,
        edits: edited.then_some(&checked.edits),
    };
    let mut c = Checker {
        src: &src,
        problems: Vec::new(),
        warnings: Vec::new(),
        base,
        skip: edited.then_some(&checked.edits),
        check,
    };
    let policy = c.policy(raw);
    problems.append(&mut c.problems);
    if problems.is_empty() {
        let mut policy = policy;
        policy.warnings = c.warnings;
        Ok(policy)
    } else {
        problems.sort_by_key(|p| (p.file != src.name, p.file.clone(), p.line, p.column));
        problems
            .dedup_by(|a, b| a.line == b.line && a.column == b.column && a.message == b.message);
        Err(Problems(problems))
    }
}

/// Where each table of a list starts in the text.
fn starts<T>(tables: &[Spanned<T>]) -> Vec<usize> {
    tables.iter().map(|t| t.span().start).collect()
}

struct Checker<'a> {
    src: &'a Source<'a>,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    base: Option<&'a Path>,
    /// Spans in text the structural pass wrote: no problem is reported there.
    skip: Option<&'a structure::Edits>,
    /// What every block list read must pass.
    check: Option<&'a dyn FileCheck>,
}

impl Checker<'_> {
    fn error<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        if self.skip.is_some_and(|e| e.ours(at.span().start)) {
            return;
        }
        self.problems.push(self.src.problem(at.span(), message));
    }

    fn policy(&mut self, raw: RawPolicy) -> Policy {
        let mode = self.mode(raw.mode.as_ref());
        let ports = self.ports(raw.ports.as_ref());
        let default_rate = self.default_rate(raw.default.as_ref());
        let signatures = self.signatures(raw.break_glass.as_ref());
        let default_paths = raw
            .default
            .as_ref()
            .and_then(|d| d.get_ref().path.as_ref())
            .map(|p| self.paths(p))
            .unwrap_or_default();
        let tenants = self.tenants(&raw.tenant);
        let rules = self.rules(&raw);
        self.tenant_refs(&raw, &rules, &tenants);
        self.uid_capacity(&rules);
        self.shadowed_blocks(&rules);
        self.local_allows(&rules);
        let sendmail_programs = self.sendmail(raw.sendmail.as_ref());
        let charge_subordinate_uids = self.subordinate_uids(raw.subordinate_uids.as_ref());
        let default = raw.default.as_ref().map(Spanned::get_ref);
        let default_messages = default.and_then(|d| self.budget(d.messages.as_ref()));
        let default_recipients = default.and_then(|d| self.budget(d.recipients.as_ref()));
        let mta = self.mta(raw.mta.as_ref());
        Policy {
            origin: self.src.name.clone(),
            mode,
            ports,
            default_rate,
            rules,
            warnings: Vec::new(),
            sha256: crate::digest::sha256_hex(self.src.text.as_bytes()),
            suspension: raw.suspension.as_ref().and_then(|s| self.suspension(s)),
            signatures,
            default_paths,
            sendmail_programs,
            charge_subordinate_uids,
            default_messages,
            default_recipients,
            mta,
            signed_by: None,
            tenants,
        }
    }

    /// `[tenant.NAME]` tables: a name fit for a metric label and a store key, a fleet rate and
    /// a local one.
    fn tenants(
        &mut self,
        raw: &std::collections::BTreeMap<String, Spanned<raw::RawTenant>>,
    ) -> std::collections::BTreeMap<String, Tenant> {
        use antispam_common::{maps::TENANTS_MAX, tenant::tenant_key};
        let mut out = std::collections::BTreeMap::new();
        if raw.len() > TENANTS_MAX as usize {
            self.problems.push(self.src.problem(
                0..0,
                format!(
                    "{} tenants; at most {TENANTS_MAX} can be enforced",
                    raw.len()
                ),
            ));
        }
        let mut keys = std::collections::BTreeMap::new();
        for (name, table) in raw {
            let t = table.get_ref();
            let good = !name.is_empty()
                && name.len() <= TENANT_NAME_MAX
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !good {
                self.error(
                    table,
                    format!("tenant name {name:?}: use 1 to {TENANT_NAME_MAX} letters, digits, '-', '_' or '.' (it is a metric label and a fleet store key)"),
                );
                continue;
            }
            let key = tenant_key(name.as_bytes());
            if let Some(other) = keys.insert(key, name.clone()) {
                self.error(
                    table,
                    format!("tenants {other:?} and {name:?} hash to one key: rename one"),
                );
            }
            let rate = self.rate(&t.rate, t.burst.as_ref());
            let local = self.rate(&t.local_rate, t.local_burst.as_ref());
            if let (Some(rate), Some(local)) = (rate, local) {
                if local.gcra.interval_ns < rate.gcra.interval_ns {
                    self.error(
                        &t.local_rate,
                        "local_rate is more than the whole fleet's rate: one host alone would get more than the fleet",
                    );
                }
                out.insert(
                    name.clone(),
                    Tenant {
                        name: name.clone(),
                        rate,
                        local,
                        key,
                    },
                );
            }
        }
        out
    }

    /// Every `[[limit]] tenant` names a `[tenant.NAME]`; a tenant no rule names is a warning.
    fn tenant_refs(
        &mut self,
        raw: &RawPolicy,
        rules: &[Rule],
        tenants: &std::collections::BTreeMap<String, Tenant>,
    ) {
        let mut used = BTreeSet::new();
        for r in rules.iter().filter(|r| r.kind == RuleKind::Limit) {
            let Some(name) = raw.limit[r.index].get_ref().tenant.as_ref() else {
                continue;
            };
            if tenants.contains_key(name.get_ref()) {
                used.insert(name.get_ref().clone());
            } else if !raw.tenant.contains_key(name.get_ref()) {
                let known: Vec<&str> = raw.tenant.keys().map(String::as_str).collect();
                self.error(
                    name,
                    format!(
                        "no [tenant.{}] table; tenants: {}",
                        name.get_ref(),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
        for (name, table) in &raw.tenant {
            if tenants.contains_key(name) && !used.contains(name) {
                self.warnings.push(self.src.problem(
                    table.span(),
                    format!("no [[limit]] names tenant {name:?}: its budget is not spent"),
                ));
            }
        }
    }

    /// `messages` / `recipients`: a rate whose burst is its count.
    fn budget(&mut self, v: Option<&Spanned<String>>) -> Option<RateSpec> {
        self.rate(v?, None)
    }

    fn mta(&mut self, mta: Option<&Spanned<raw::RawMta>>) -> MtaPolicy {
        let Some(m) = mta.map(Spanned::get_ref) else {
            return MtaPolicy::default();
        };
        let permanent = match m.refusal.as_ref() {
            None => false,
            Some(r) => match r.get_ref().as_str() {
                "temporary" => false,
                "permanent" => true,
                other => {
                    self.error(
                        r,
                        format!(
                            "unknown refusal {other:?}: expected \"temporary\" (4xx, the default) or \"permanent\" (5xx)"
                        ),
                    );
                    false
                }
            },
        };
        MtaPolicy {
            permanent,
            record_addresses: m.record_addresses,
        }
    }

    fn subordinate_uids(&mut self, v: Option<&Spanned<String>>) -> bool {
        match v.map(|s| s.get_ref().as_str()) {
            None | Some("owner") => true,
            Some("separate") => false,
            Some(other) => {
                let v = v.expect("matched Some");
                self.error(
                    v,
                    format!(
                        "unknown subordinate_uids {other:?}: expected \"owner\" or \"separate\""
                    ),
                );
                true
            }
        }
    }

    /// `[default.path]` / `[limit.path]`.
    fn paths(&mut self, paths: &Spanned<raw::RawPaths>) -> PathBudgets {
        use antispam_common::event::{PATH_DIRECT, PATH_LOCAL_SMTP, PATH_SENDMAIL};
        let p = paths.get_ref();
        let mut out = PathBudgets::default();
        for (code, budget) in [
            (PATH_DIRECT, &p.direct),
            (PATH_SENDMAIL, &p.sendmail),
            (PATH_LOCAL_SMTP, &p.local_smtp),
        ] {
            if let Some(b) = budget {
                let b = b.get_ref();
                out.0[code as usize] = self.rate(&b.rate, b.burst.as_ref());
            }
        }
        if p.direct.is_none() && p.sendmail.is_none() && p.local_smtp.is_none() {
            self.error(
                paths,
                "path names no mail path: give direct, sendmail or local_smtp, e.g. [limit.path.sendmail] rate = \"100/hour\"",
            );
        }
        out
    }

    /// `[break_glass]`: `require_signatures` needs `allowed_signers`, an absolute path.
    fn signatures(&mut self, raw: Option<&Spanned<raw::RawBreakGlass>>) -> Signatures {
        let Some(raw) = raw else {
            return Signatures::default();
        };
        let b = raw.get_ref();
        let required = b.require_signatures.as_ref().is_some_and(|r| *r.get_ref());
        let allowed_signers = b.allowed_signers.as_ref().and_then(|p| {
            let path = PathBuf::from(p.get_ref());
            if path.is_absolute() {
                Some(path)
            } else {
                self.error(p, "allowed_signers must be an absolute path");
                None
            }
        });
        if required && allowed_signers.is_none() && b.allowed_signers.is_none() {
            self.error(
                raw,
                "require_signatures = true needs allowed_signers = \"/etc/antispam/allowed_signers\" (ssh-keygen's format)",
            );
        }
        Signatures {
            required,
            allowed_signers,
        }
    }

    /// `[sendmail] programs`: absolute paths, each once.
    fn sendmail(&mut self, sendmail: Option<&Spanned<raw::RawSendmail>>) -> Vec<PathBuf> {
        let Some(s) = sendmail else {
            return DEFAULT_SENDMAIL_PROGRAMS
                .iter()
                .map(PathBuf::from)
                .collect();
        };
        let list = &s.get_ref().programs;
        let mut out: Vec<PathBuf> = Vec::new();
        for p in list.get_ref() {
            let path = PathBuf::from(p.get_ref());
            if !path.is_absolute() {
                self.error(
                    p,
                    format!(
                        "{:?} is not an absolute path (e.g. \"/usr/sbin/postdrop\")",
                        p.get_ref()
                    ),
                );
            } else if out.contains(&path) {
                self.error(p, format!("{:?} is listed twice", p.get_ref()));
            } else {
                out.push(path);
            }
        }
        if out.len() > antispam_common::maps::PROGRAMS_MAX as usize {
            self.error(
                list,
                format!(
                    "at most {} programs can be counted",
                    antispam_common::maps::PROGRAMS_MAX
                ),
            );
        }
        if list.get_ref().is_empty() {
            self.warnings.push(self.src.problem(
                list.span(),
                "programs is empty: mail handed to the local MTA through sendmail is not counted",
            ));
        }
        out
    }

    /// An allow-listed destination that is the host itself never applies: what is handed to the
    /// local MTA is a submission, charged to whoever hands it (say so, once per rule).
    fn local_allows(&mut self, rules: &[Rule]) {
        let loopback = |d: &IpNet| match d {
            IpNet::V4(n) => n.contains(&std::net::Ipv4Addr::LOCALHOST) || n.network().is_loopback(),
            IpNet::V6(n) => n.contains(&std::net::Ipv6Addr::LOCALHOST),
        };
        for rule in rules.iter().filter(|r| r.kind == RuleKind::Allow) {
            if let Some(d) = rule.destinations.iter().find(|d| loopback(d)) {
                self.warnings.push(Problem {
                    file: self.src.name.clone(),
                    line: rule.line,
                    column: 1,
                    message: format!(
                        "{} allows {d}, but a connect to the host itself is a submission to the local MTA, charged to the submitter like mail through sendmail: the allow does not apply to it (allow the MTA's users instead)",
                        rule.name()
                    ),
                });
            }
        }
    }

    fn mode(&mut self, mode: Option<&Spanned<String>>) -> Mode {
        let Some(m) = mode else {
            return Mode::Enforce;
        };
        match m.get_ref().as_str() {
            "enforce" => Mode::Enforce,
            "monitor" => Mode::Monitor,
            other => {
                self.error(
                    m,
                    format!("unknown mode {other:?}: expected \"enforce\" or \"monitor\""),
                );
                Mode::Enforce
            }
        }
    }

    fn ports(&mut self, list: Option<&Spanned<Vec<Spanned<i64>>>>) -> BTreeSet<u16> {
        let mut ports = BTreeSet::new();
        let Some(list) = list else {
            ports.extend(DEFAULT_PORTS);
            return ports;
        };
        if list.get_ref().is_empty() {
            self.error(
                list,
                "ports is empty: list at least one SMTP port, e.g. [25, 465, 587]",
            );
        }
        for p in list.get_ref() {
            match u16::try_from(*p.get_ref()) {
                Ok(port) if port != 0 => {
                    if !ports.insert(port) {
                        self.error(p, format!("port {port} is listed twice"));
                    }
                }
                _ => self.error(p, format!("{} is not a TCP port (1 to 65535)", p.get_ref())),
            }
        }
        ports
    }

    fn default_rate(&mut self, default: Option<&Spanned<raw::RawDefault>>) -> RateSpec {
        let builtin = || values::parse_rate(DEFAULT_RATE, None).expect("valid default rate");
        match default {
            None => builtin(),
            Some(d) => {
                let d = d.get_ref();
                self.rate(&d.rate, d.burst.as_ref()).unwrap_or_else(builtin)
            }
        }
    }

    /// Every `[[allow]]`, `[[limit]]` and `[[block]]` table, numbered in file order across
    /// kinds, so ids read top to bottom.
    fn rules(&mut self, raw: &RawPolicy) -> Vec<Rule> {
        let mut tables: Vec<(usize, RuleKind, usize)> = Vec::new();
        for (kind, starts) in [
            (RuleKind::Allow, starts(&raw.allow)),
            (RuleKind::Limit, starts(&raw.limit)),
            (RuleKind::Block, starts(&raw.block)),
        ] {
            tables.extend(starts.into_iter().enumerate().map(|(i, s)| (s, kind, i)));
        }
        tables.sort();
        (1u32..)
            .zip(tables)
            .map(|(id, (start, kind, index))| {
                let mut rule = Rule {
                    id,
                    kind,
                    index,
                    line: self.src.line(start),
                    uids: Vec::new(),
                    cgroups: Vec::new(),
                    destinations: Vec::new(),
                    rate: None,
                    shared: false,
                    nested_budgets: false,
                    suspension: None,
                    paths: PathBudgets::default(),
                    sasl_users: Vec::new(),
                    messages: None,
                    recipients: None,
                    tenant: None,
                };
                match kind {
                    RuleKind::Allow => self.allow(&raw.allow[index], &mut rule),
                    RuleKind::Limit => self.limit(&raw.limit[index], &mut rule),
                    RuleKind::Block => self.block(&raw.block[index], &mut rule),
                }
                rule
            })
            .collect()
    }

    fn allow(&mut self, table: &Spanned<raw::RawAllow>, rule: &mut Rule) {
        let t = table.get_ref();
        rule.uids = self.users(&t.users, t.skip_unknown_users);
        rule.cgroups = self.cgroups(&t.cgroups);
        rule.destinations = self.destinations(&t.destinations);
        if t.users.is_empty() && t.cgroups.is_empty() && t.destinations.is_empty() {
            self.error(
                table,
                "[[allow]] names nothing: give users, cgroups or destinations",
            );
        }
    }

    fn limit(&mut self, table: &Spanned<raw::RawLimit>, rule: &mut Rule) {
        let t = table.get_ref();
        rule.uids = self.users(&t.users, t.skip_unknown_users);
        rule.cgroups = self.cgroups(&t.cgroups);
        rule.sasl_users = self.sasl_users(&t.sasl_users);
        rule.messages = self.budget(t.messages.as_ref());
        rule.recipients = self.budget(t.recipients.as_ref());
        let kernel_keys = !t.users.is_empty() || !t.cgroups.is_empty();
        rule.tenant = t.tenant.as_ref().map(|n| n.get_ref().clone());
        if let (Some(tenant), false) = (&t.tenant, kernel_keys) {
            self.error(
                tenant,
                "tenant budgets are spent by users and cgroups, and this rule names none",
            );
        }
        match (&t.rate, kernel_keys) {
            (Some(rate), true) => rule.rate = self.rate(rate, t.burst.as_ref()),
            // A tenant's budget alone limits the rule's keys.
            (None, true) if t.tenant.is_some() => {}
            (None, true) => self.error(
                table,
                "[[limit]] names users or cgroups but no rate: give rate = \"N/unit\" (connections and submissions)",
            ),
            (Some(rate), false) if !t.sasl_users.is_empty() => self.error(
                rate,
                "rate counts the connections of users and cgroups, and this rule names only sasl_users: give messages and recipients instead (or name users in a rule of their own)",
            ),
            _ => {}
        }
        if !kernel_keys && t.sasl_users.is_empty() {
            self.error(
                table,
                "[[limit]] names nothing: give users, cgroups or sasl_users",
            );
        } else if kernel_keys && !t.sasl_users.is_empty() {
            self.error(
                &t.sasl_users[0],
                "a [[limit]] names either users and cgroups or sasl_users: give SASL users a rule of their own",
            );
        } else if !t.sasl_users.is_empty() && t.messages.is_none() && t.recipients.is_none() {
            self.error(
                table,
                "sasl_users without messages or recipients limits nothing: give messages = \"N/unit\" or recipients = \"N/unit\"",
            );
        }
        rule.suspension = t.suspension.as_ref().and_then(|s| self.suspension(s));
        if let Some(p) = &t.path {
            rule.paths = self.paths(p);
        }
        rule.nested_budgets = t.nested_budgets;
        if let Some(shared) = &t.shared {
            rule.shared = *shared.get_ref();
            if rule.shared && t.cgroups.is_empty() {
                self.error(shared, "shared = true pools the budget of the cgroups a rule names, and this rule names none");
            }
        }
    }

    fn block(&mut self, table: &Spanned<raw::RawBlock>, rule: &mut Rule) {
        let t = table.get_ref();
        rule.destinations = self.destinations(&t.destinations);
        rule.suspension = t.suspension.as_ref().and_then(|s| self.suspension(s));
        for f in &t.files {
            rule.destinations.extend(self.block_file(f));
        }
        if t.destinations.is_empty() && t.files.is_empty() {
            self.error(table, "[[block]] names nothing: give destinations or files");
        }
    }

    /// The UID rules must fit the kernel's map.
    fn uid_capacity(&mut self, rules: &[Rule]) {
        let uid_entries: u64 = rules.iter().flat_map(|r| &r.uids).map(UidRange::len).sum();
        if uid_entries > u64::from(UID_RULES_MAX) {
            self.problems.push(self.src.problem(
                0..0,
                format!(
                    "the user rules name {uid_entries} UIDs in all; at most {UID_RULES_MAX} can be enforced: narrow the ranges"
                ),
            ));
        }
    }

    /// A `[suspension]` duration: longer than zero, at most [`defaults::MAX_SUSPENSION`].
    fn duration(&mut self, d: &Spanned<String>) -> Option<std::time::Duration> {
        let max = crate::defaults::MAX_SUSPENSION;
        match humantime::parse_duration(d.get_ref()) {
            Ok(v) if !v.is_zero() && v <= max => Some(v),
            Ok(v) if v > max => {
                self.error(
                    d,
                    format!(
                        "{:?} is longer than the longest allowed, {} days",
                        d.get_ref(),
                        max.as_secs() / 86_400
                    ),
                );
                None
            }
            Ok(_) => {
                self.error(d, "a duration must be longer than zero");
                None
            }
            Err(e) => {
                self.error(
                    d,
                    format!(
                        "malformed duration {:?}: {e} (e.g. \"15m\", \"1h\", \"7d\")",
                        d.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn suspension(&mut self, s: &Spanned<raw::RawSuspension>) -> Option<SuspensionPolicy> {
        let r = s.get_ref();
        let strikes = match u32::try_from(*r.strikes.get_ref()) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                self.error(&r.strikes, "strikes must be a whole number of at least 1");
                None
            }
        };
        let window = self.duration(&r.window);
        if r.durations.get_ref().is_empty() {
            self.error(
                &r.durations,
                "durations is empty: give at least one, e.g. [\"15m\", \"1h\", \"24h\"]",
            );
        }
        let durations: Vec<Option<std::time::Duration>> = r
            .durations
            .get_ref()
            .iter()
            .map(|d| self.duration(d))
            .collect();
        let forget_after = match &r.forget_after {
            Some(f) => self.duration(f),
            None => humantime::parse_duration(DEFAULT_FORGET_AFTER).ok(),
        };
        let durations: Option<Vec<std::time::Duration>> = durations.into_iter().collect();
        Some(SuspensionPolicy {
            strikes: strikes?,
            window: window?,
            durations: durations.filter(|d| !d.is_empty())?,
            forget_after: forget_after?,
        })
    }

    fn rate(&mut self, rate: &Spanned<String>, burst: Option<&Spanned<i64>>) -> Option<RateSpec> {
        match values::parse_rate(rate.get_ref(), burst.map(|b| *b.get_ref())) {
            Ok(r) => Some(r),
            Err(e) => {
                // A bad burst is reported at the burst, anything else at the rate.
                match burst {
                    Some(b) if e.is_burst() => self.error(b, e.to_string()),
                    _ => self.error(rate, e.to_string()),
                }
                None
            }
        }
    }

    fn users(&mut self, users: &[Spanned<RawUser>], skip_unknown: bool) -> Vec<UidRange> {
        let mut out = Vec::new();
        for u in users {
            let parsed = match u.get_ref() {
                RawUser::Number(n) => values::uid_number(*n)
                    .map(|n| values::UserRef::Range(UidRange { first: n, last: n })),
                RawUser::Text(t) => values::parse_user_text(t),
            };
            match parsed {
                Ok(values::UserRef::Range(r)) => out.push(r),
                Ok(values::UserRef::Name(name)) => match values::resolve_user(&name) {
                    Ok(Some(uid)) => out.push(UidRange { first: uid, last: uid }),
                    Ok(None) if skip_unknown => {}
                    Ok(None) => self.error(
                        u,
                        format!("unknown user {name:?}: no such user on this host (numbers and ranges such as \"1000-1999\" work too; skip_unknown_users = true skips missing names)"),
                    ),
                    Err(e) => self.error(u, e.to_string()),
                },
                Err(e) => self.error(u, e.to_string()),
            }
        }
        out
    }

    /// SASL login names: glob patterns (`"*@example.com"`), not empty.
    fn sasl_users(&mut self, names: &[Spanned<String>]) -> Vec<glob::Pattern> {
        let mut out = Vec::new();
        for n in names {
            let text = n.get_ref();
            if text.trim().is_empty() {
                self.error(n, "empty SASL user name");
                continue;
            }
            match glob::Pattern::new(text) {
                Ok(p) => out.push(p),
                Err(e) => self.error(n, format!("SASL user pattern {text:?}: {e}")),
            }
        }
        out
    }

    fn cgroups(&mut self, cgroups: &[Spanned<String>]) -> Vec<glob::Pattern> {
        let mut out = Vec::new();
        for c in cgroups {
            match values::parse_cgroup_pattern(c.get_ref()) {
                Ok(p) => out.push(p),
                Err(e) => self.error(c, e.to_string()),
            }
        }
        out
    }

    fn destinations(&mut self, dests: &[Spanned<String>]) -> Vec<IpNet> {
        let mut out = Vec::new();
        for d in dests {
            match values::parse_destination(d.get_ref()) {
                Ok(net) => out.push(values::unmap(net)),
                Err(e) => self.error(d, e.to_string()),
            }
        }
        out
    }

    /// Reads a block-list file: one CIDR or address a line, `#` and `;` comments.
    fn block_file(&mut self, entry: &Spanned<String>) -> Vec<IpNet> {
        let mut path = PathBuf::from(entry.get_ref());
        if path.is_relative() {
            if let Some(base) = self.base {
                path = base.join(path);
            }
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.error(
                    entry,
                    format!("cannot read block list {}: {e}", path.display()),
                );
                return Vec::new();
            }
        };
        if let Some(c) = self.check {
            if let Err(why) = c.check(&path, text.as_bytes()) {
                self.error(
                    entry,
                    format!("block list {} refused: {why}", path.display()),
                );
                return Vec::new();
            }
        }
        let file = Source::new(&path, &text);
        let mut out = Vec::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let content = line.split(['#', ';']).next().unwrap_or("");
            let trimmed = content.trim();
            if !trimmed.is_empty() {
                let start = offset + (content.len() - content.trim_start().len());
                match values::parse_destination(trimmed) {
                    Ok(net) => out.push(values::unmap(net)),
                    // The line itself is not repeated: a file named by mistake (a key, a
                    // password file) must not end up in the agent's log and audit records.
                    Err(e) => self
                        .problems
                        .push(file.problem(start..start, e.without_text())),
                }
            }
            offset += line.len();
        }
        out
    }

    /// A blocked prefix inside an allowed one never takes effect (allow wins): say so.
    fn shadowed_blocks(&mut self, rules: &[Rule]) {
        let allowed: Vec<(&IpNet, &Rule)> = rules
            .iter()
            .filter(|r| r.kind == RuleKind::Allow)
            .flat_map(|r| r.destinations.iter().map(move |d| (d, r)))
            .collect();
        for rule in rules.iter().filter(|r| r.kind == RuleKind::Block) {
            for d in &rule.destinations {
                if let Some((a, ar)) = allowed.iter().find(|(a, _)| a.contains(d)) {
                    self.warnings.push(Problem {
                        file: self.src.name.clone(),
                        line: rule.line,
                        column: 1,
                        message: format!(
                            "{} blocks {d}, but {} on line {} allows {a}, and allow wins: the block has no effect",
                            rule.name(),
                            ar.name(),
                            ar.line
                        ),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
