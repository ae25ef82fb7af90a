//! The routing policy: an ordered list of rules, data rather than a script. A rule matches
//! on the source's class (an address group and its tag, a trusted peer, a subscriber who
//! authenticates, anyone), the method, the Request-URI user (exact, prefix, regex), its
//! domain, and whether the AoR is registered; its action challenges, looks up the
//! location, relays to a trunk or a fixed URI, or replies; it may also set and remove
//! headers and set dialog variables.
//!
//! Order: rules are tried by `priority` (lower first, default 100), then by how specific
//! their user match is (exact, then the longest prefix, then regex or none), then as
//! written; the first rule that matches decides. So among prefix rules the longest prefix
//! wins whatever their order in the file, as in a carrier's number plan.
//!
//! The matcher is sans-IO: what it needs to know about the request comes in [`Facts`];
//! whether the AoR is registered is asked only when a rule depends on it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use limes_sip::Method;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// A rule as written in the configuration (`[[route]]`) or given to `route.set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub name: String,
    #[serde(default = "default_priority")]
    pub priority: i32,
    /// `any`, `trusted`, `subscriber`, `carrier` (any address group), `group:N` or
    /// `group:N:TAG`.
    #[serde(default = "any")]
    pub source: String,
    /// Methods it applies to; empty: every method.
    #[serde(default)]
    pub method: Vec<String>,
    /// `exact:USER`, `prefix:DIGITS`, `regex:RE`; absent: any user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The Request-URI host, or `local` (a domain this node serves); absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Whether the Request-URI's AoR has bindings; absent: either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered: Option<bool>,
    /// `location`, `trunk:NAME`, `relay:URI`, `reply:CODE REASON`, `challenge`.
    pub action: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set_headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove_headers: Vec<String>,
    /// Dialog variables set for the call.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
}

fn default_priority() -> i32 {
    100
}

fn any() -> String {
    "any".into()
}

/// Which sources a rule is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceMatch {
    Any,
    Trusted,
    /// Neither trusted nor in a group: authenticated by digest before the action runs.
    Subscriber,
    /// In any address group.
    Carrier,
    Group {
        id: u32,
        tag: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub enum UserMatch {
    Any,
    Exact(String),
    Prefix(String),
    Regex(regex::Regex),
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fork to the AoR's bindings (404 when there are none).
    Location,
    /// Relay through a trunk, with its failover.
    Trunk(String),
    /// Relay to a fixed URI (a media server, a gateway).
    Relay(String),
    Reply {
        status: u16,
        reason: String,
    },
    /// Authenticate the request (challenge without valid credentials), then go on with
    /// the next rules as a subscriber's request.
    Challenge,
    /// Accept a REGISTER without a challenge: a PBX in an address group registering the
    /// AoRs the rule names (its own users). Nothing else ever skips REGISTER's challenge.
    Register,
}

impl Action {
    /// The action's kind, as metrics label it.
    pub fn label(&self) -> &'static str {
        match self {
            Action::Location => "location",
            Action::Trunk(_) => "trunk",
            Action::Relay(_) => "relay",
            Action::Reply { .. } => "reply",
            Action::Challenge => "challenge",
            Action::Register => "register",
        }
    }
}

/// Header edits a rule makes on the forwarded request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub def: RuleDef,
    pub source: SourceMatch,
    /// Empty: every method.
    methods: Vec<Method>,
    pub user: UserMatch,
    /// Lowercased; `None`: any.
    domain: Option<String>,
    pub action: Action,
    pub edits: Arc<HeaderEdits>,
    pub vars: Arc<Vec<(String, String)>>,
    /// Requests the rule decided: a handle on the node's metric when installed
    /// ([`Policy::count_with`]), so counting costs one atomic add.
    pub decided: Counter,
}

/// A rule set that cannot be used: the rule and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route rule {rule:?}: {why}")]
pub struct RuleError {
    pub rule: String,
    pub why: String,
}

/// What rules may name: trunks, and address groups by name. A function telling whether
/// a trunk exists is one (with no group names).
pub trait Names {
    fn trunk(&self, name: &str) -> bool;
    fn group(&self, _name: &str) -> Option<u32> {
        None
    }
}

impl<F: Fn(&str) -> bool> Names for F {
    fn trunk(&self, name: &str) -> bool {
        self(name)
    }
}

/// Trunks by a function, and address group names from a table.
pub struct Known<'a, F: Fn(&str) -> bool> {
    pub trunks: F,
    pub groups: &'a BTreeMap<String, u32>,
}

impl<F: Fn(&str) -> bool> Names for Known<'_, F> {
    fn trunk(&self, name: &str) -> bool {
        (self.trunks)(name)
    }
    fn group(&self, name: &str) -> Option<u32> {
        self.groups.get(name).copied()
    }
}

/// Rules at most, and the longest pattern.
pub const MAX_RULES: usize = 100_000;
const MAX_PATTERN: usize = 1024;

impl Rule {
    /// Checks a rule; `names` knows the trunks a `trunk:` action may name and the named
    /// address groups a `group:NAME` source may.
    pub fn compile(def: RuleDef, names: &dyn Names) -> Result<Self, RuleError> {
        let err = |why: String| RuleError {
            rule: def.name.clone(),
            why,
        };
        if def.name.is_empty() {
            return Err(err("a name is required".into()));
        }
        let source = match def.source.as_str() {
            "any" => SourceMatch::Any,
            "trusted" => SourceMatch::Trusted,
            "subscriber" => SourceMatch::Subscriber,
            "carrier" => SourceMatch::Carrier,
            other => {
                let rest = other.strip_prefix("group:").ok_or_else(|| {
                    err(format!(
                        "source {other:?} (any, trusted, subscriber, carrier, group:N, group:N:TAG)"
                    ))
                })?;
                let (id, tag) = match rest.split_once(':') {
                    Some((id, tag)) => (id, Some(tag.to_owned())),
                    None => (rest, None),
                };
                let id = match id.parse::<u32>() {
                    Ok(n) => Some(n).filter(|n| *n > 0),
                    Err(_) => names.group(id),
                };
                let id = id.ok_or_else(|| {
                    err(format!(
                        "source {other:?}: the group is a number from 1 or a defined group name"
                    ))
                })?;
                SourceMatch::Group { id, tag }
            }
        };
        let methods = def
            .method
            .iter()
            .map(|m| {
                let parsed = Method::from_bytes(m.as_bytes());
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(err(format!("method {m:?}")));
                }
                Ok(parsed)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let user = match def.user.as_deref() {
            None | Some("") => UserMatch::Any,
            Some(u) if u.len() > MAX_PATTERN => {
                return Err(err(format!("user match longer than {MAX_PATTERN}")))
            }
            Some(u) => match u.split_once(':') {
                Some(("exact", v)) => UserMatch::Exact(v.to_owned()),
                Some(("prefix", v)) if !v.is_empty() => UserMatch::Prefix(v.to_owned()),
                Some(("regex", v)) => UserMatch::Regex(
                    regex::Regex::new(v).map_err(|e| err(format!("user regex: {e}")))?,
                ),
                _ => {
                    return Err(err(format!(
                        "user {u:?} (exact:USER, prefix:DIGITS, regex:RE)"
                    )))
                }
            },
        };
        let action = parse_action(&def.action, names).map_err(err)?;
        let for_register = methods.contains(&Method::Register);
        if action == Action::Register {
            if methods != [Method::Register] {
                return Err(err("a register rule has method = [\"REGISTER\"]".into()));
            }
            if !matches!(source, SourceMatch::Group { .. }) {
                return Err(err(
                    "a register rule names its source: group:N or group:N:TAG".into(),
                ));
            }
            if matches!(user, UserMatch::Any) || def.registered.is_some() {
                return Err(err(
                    "a register rule names the AoRs (user = exact:, prefix: or regex:) and no registered"
                        .into(),
                ));
            }
        } else if for_register {
            return Err(err(
                "REGISTER is authenticated by the registrar; only a register rule names it".into(),
            ));
        }
        if def.registered.is_some() && matches!(action, Action::Challenge) {
            return Err(err("a challenge rule cannot depend on registration".into()));
        }
        for (name, value) in &def.set_headers {
            check_header(name, value).map_err(err)?;
        }
        for name in &def.remove_headers {
            check_header(name, "").map_err(err)?;
        }
        Ok(Self {
            source,
            methods,
            user,
            domain: def.domain.as_ref().map(|d| d.to_ascii_lowercase()),
            action,
            edits: Arc::new(HeaderEdits {
                set: def.set_headers.clone().into_iter().collect(),
                remove: def.remove_headers.clone(),
            }),
            vars: Arc::new(def.vars.clone().into_iter().collect()),
            decided: Counter::default(),
            def,
        })
    }

    /// How specific the user match is: exact first, then longer prefixes.
    fn specificity(&self) -> usize {
        match &self.user {
            UserMatch::Exact(_) => usize::MAX,
            UserMatch::Prefix(p) => p.len(),
            UserMatch::Regex(_) | UserMatch::Any => 0,
        }
    }
}

/// Headers a rule may set or remove: tokens only, never the ones the proxy owns.
pub(crate) fn check_header(name: &str, value: &str) -> Result<(), String> {
    use limes_sip::HeaderName as H;
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
    if !token {
        return Err(format!("header name {name:?}"));
    }
    if matches!(
        H::from_bytes(name.as_bytes()),
        H::Via
            | H::From
            | H::To
            | H::CallId
            | H::CSeq
            | H::ContentLength
            | H::MaxForwards
            | H::Route
            | H::RecordRoute
            | H::Contact
    ) {
        return Err(format!("header {name:?} is the proxy's to write"));
    }
    if value.contains(['\r', '\n']) {
        return Err(format!("header {name:?}: a value on one line"));
    }
    Ok(())
}

fn parse_action(text: &str, names: &dyn Names) -> Result<Action, String> {
    let (verb, arg) = text.split_once(':').unwrap_or((text, ""));
    match (verb, arg) {
        ("location", "") => Ok(Action::Location),
        ("challenge", "") => Ok(Action::Challenge),
        ("register", "") => Ok(Action::Register),
        ("trunk", name) if names.trunk(name) => Ok(Action::Trunk(name.to_owned())),
        ("trunk", name) => Err(format!("trunk {name:?} is not defined")),
        ("relay", uri) => {
            let parsed =
                limes_sip::uri::Uri::parse(uri).map_err(|e| format!("relay URI {uri:?}: {e}"))?;
            crate::transport::uri_transport(&parsed)
                .ok_or_else(|| format!("relay URI {uri:?}: UDP or TCP only"))?;
            Ok(Action::Relay(uri.to_owned()))
        }
        ("reply", rest) => {
            let (code, reason) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
            let status = code
                .parse::<u16>()
                .ok()
                .filter(|s| (300..700).contains(s))
                .ok_or_else(|| format!("reply {code:?}: a 3xx-6xx code"))?;
            let reason = if reason.is_empty() {
                limes_sip::build::default_reason(status).to_owned()
            } else {
                reason.to_owned()
            };
            if reason.contains(['\r', '\n']) {
                return Err("reply reason on one line".into());
            }
            Ok(Action::Reply { status, reason })
        }
        _ => Err(format!(
            "action {text:?} (location, trunk:NAME, relay:URI, reply:CODE REASON, challenge, register)"
        )),
    }
}

/// The policy when the configuration has no `[[route]]`: the seeds' behaviour. A
/// carrier's call reaches a registered user or gets 404 User Not Registered; a trusted
/// peer's or an authenticated subscriber's reaches a registered user, else goes out
/// through `out_trunk` (the `sip.next_hop` list), else gets 404.
pub fn default_rules(out_trunk: Option<&str>) -> Vec<RuleDef> {
    let rule = |name: &str, source: &str, registered: Option<bool>, action: &str| RuleDef {
        name: name.into(),
        priority: default_priority(),
        source: source.into(),
        method: Vec::new(),
        user: None,
        domain: None,
        registered,
        action: action.into(),
        set_headers: BTreeMap::new(),
        remove_headers: Vec::new(),
        vars: BTreeMap::new(),
    };
    let out = out_trunk.map_or_else(
        || "reply:404 User Not Registered".to_owned(),
        |t| format!("trunk:{t}"),
    );
    vec![
        rule("carrier-to-user", "carrier", Some(true), "location"),
        rule(
            "carrier-to-nobody",
            "carrier",
            None,
            "reply:404 User Not Registered",
        ),
        rule("trusted-to-user", "trusted", Some(true), "location"),
        rule("trusted-out", "trusted", None, &out),
        rule("subscriber-to-user", "subscriber", Some(true), "location"),
        rule("subscriber-out", "subscriber", None, &out),
    ]
}

/// What the matcher knows about a request.
pub struct Facts<'a> {
    pub method: &'a Method,
    pub user: &'a str,
    /// The Request-URI host.
    pub domain: &'a str,
    /// The domain is one this node serves.
    pub local_domain: bool,
    /// The address groups the source is in, with the tag of the entry that admits it.
    pub groups: &'a [(u32, Option<Arc<str>>)],
    pub trusted: bool,
    /// Credentials were checked already (a `challenge` rule ran).
    pub authenticated: bool,
}

impl Facts<'_> {
    fn source_is(&self, m: &SourceMatch) -> bool {
        match m {
            SourceMatch::Any => true,
            SourceMatch::Trusted => self.trusted,
            SourceMatch::Subscriber => {
                self.authenticated || (!self.trusted && self.groups.is_empty())
            }
            SourceMatch::Carrier => !self.groups.is_empty(),
            SourceMatch::Group { id, tag } => self.groups.iter().any(|(g, t)| {
                g == id && tag.as_deref().is_none_or(|want| t.as_deref() == Some(want))
            }),
        }
    }
}

/// A checked rule set, in evaluation order, indexed by user prefix.
#[derive(Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    /// Rules (by index) whose user match is a prefix, by that prefix.
    by_prefix: HashMap<String, SmallVec<[u32; 2]>>,
    /// The lengths of those prefixes, longest first.
    prefix_lens: Vec<usize>,
    /// Rules matching every user or by exact user or regex.
    others: Vec<u32>,
}

impl Policy {
    /// Checks every rule; the first bad one is named and nothing is replaced.
    pub fn compile(defs: Vec<RuleDef>, names: &dyn Names) -> Result<Self, RuleError> {
        if defs.len() > MAX_RULES {
            return Err(RuleError {
                rule: String::new(),
                why: format!("more than {MAX_RULES} rules"),
            });
        }
        let mut seen = std::collections::HashSet::new();
        let mut rules = Vec::with_capacity(defs.len());
        for def in defs {
            if !seen.insert(def.name.clone()) {
                return Err(RuleError {
                    rule: def.name,
                    why: "the name is used twice".into(),
                });
            }
            rules.push(Rule::compile(def, names)?);
        }
        // A stable sort keeps the written order among equals.
        rules.sort_by_key(|r| (r.def.priority, std::cmp::Reverse(r.specificity())));
        let mut by_prefix: HashMap<String, SmallVec<[u32; 2]>> = HashMap::new();
        let mut others = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            match &r.user {
                UserMatch::Prefix(p) => by_prefix.entry(p.clone()).or_default().push(i as u32),
                _ => others.push(i as u32),
            }
        }
        let mut prefix_lens: Vec<usize> = by_prefix.keys().map(String::len).collect();
        prefix_lens.sort_unstable_by(|a, b| b.cmp(a));
        prefix_lens.dedup();
        Ok(Self {
            rules,
            by_prefix,
            prefix_lens,
            others,
        })
    }

    /// The rules in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Gives each rule the counter its decisions are counted in.
    pub fn count_with(&mut self, counter: impl Fn(&Rule) -> Counter) {
        for r in &mut self.rules {
            r.decided = counter(r);
        }
    }

    /// Whether any rule lets a REGISTER in without a challenge.
    pub fn has_register_rules(&self) -> bool {
        self.rules.iter().any(|r| r.action == Action::Register)
    }

    /// The register rule that lets this REGISTER in without a challenge (`facts.user`
    /// and `facts.domain` are the To URI's), if any.
    pub fn register_exempt(&self, facts: &Facts<'_>) -> Option<&Rule> {
        let mut after = None;
        while let Some((i, rule)) = self.evaluate(facts, after, &mut || false) {
            if rule.action == Action::Register {
                return Some(rule);
            }
            after = Some(i);
        }
        None
    }

    /// The first rule after `after` (an index from an earlier answer; `None`: from the
    /// start) that matches; `registered` is asked at most once, only if a rule needs it.
    pub fn evaluate(
        &self,
        facts: &Facts<'_>,
        after: Option<usize>,
        registered: &mut dyn FnMut() -> bool,
    ) -> Option<(usize, &Rule)> {
        // Candidates: the rules whose prefix begins the user, and every other rule, in
        // evaluation order.
        let mut candidates: SmallVec<[u32; 32]> = SmallVec::new();
        for &len in &self.prefix_lens {
            if let Some(ids) = facts.user.get(..len).and_then(|p| self.by_prefix.get(p)) {
                candidates.extend_from_slice(ids);
            }
        }
        let from = after.map_or(0, |a| a + 1);
        let mut known_registered = None;
        let mut try_rule = |i: usize| -> bool {
            let r = &self.rules[i];
            if !(r.methods.is_empty() || r.methods.contains(facts.method))
                || !facts.source_is(&r.source)
            {
                return false;
            }
            let user_ok = match &r.user {
                UserMatch::Any | UserMatch::Prefix(_) => true,
                UserMatch::Exact(u) => u == facts.user,
                UserMatch::Regex(re) => re.is_match(facts.user),
            };
            let domain_ok = match r.domain.as_deref() {
                None => true,
                Some("local") => facts.local_domain,
                Some(d) => d.eq_ignore_ascii_case(facts.domain),
            };
            if !(user_ok && domain_ok) {
                return false;
            }
            match r.def.registered {
                None => true,
                Some(want) => *known_registered.get_or_insert_with(&mut *registered) == want,
            }
        };
        if candidates.is_empty() {
            return self
                .others
                .iter()
                .map(|&i| i as usize)
                .filter(|&i| i >= from)
                .find(|&i| try_rule(i))
                .map(|i| (i, &self.rules[i]));
        }
        candidates.extend(self.others.iter().copied());
        candidates.sort_unstable();
        candidates
            .into_iter()
            .map(|i| i as usize)
            .filter(|&i| i >= from)
            .find(|&i| try_rule(i))
            .map(|i| (i, &self.rules[i]))
    }
}

#[cfg(test)]
mod tests;
