//! `[dialog]` in the configuration: what is tracked, the timers, the profiles and limits,
//! the variables set on a call, the CDR file and collector.

use std::path::PathBuf;
use std::time::Duration;

use limes_sip::Message;
use serde::Deserialize;

use super::cdr::Var;
use super::collector::CollectorUrl;
use super::profiles::{ClassRule, LimitDef, ProfileDef};
use super::Origin;

/// How dialogs are tracked; `[dialog]` in the configuration.
#[derive(Debug, Clone)]
pub struct DialogSettings {
    /// Track every dialog-creating INVITE (`dlg_manage()` for all).
    pub track: bool,
    /// A confirmed dialog is ended (BYE to both sides) this long after its answer.
    pub lifetime: Duration,
    /// An in-dialog request that matches no tracked dialog gets 481 (else it is relayed by
    /// its Route set, for dialogs set up before tracking or by another node).
    pub reject_unmatched: bool,
    /// Calls tracked at once; past it new INVITEs get 503.
    pub max_dialogs: usize,
    pub profiles: Vec<ProfileDef>,
    pub classes: Vec<ClassRule>,
    pub limits: Vec<LimitDef>,
    /// The CDR file (JSON lines); none: no file.
    pub cdr_file: Option<PathBuf>,
    pub cdr_rotate_bytes: u64,
    /// Where CDRs are posted as well (`http://host:port/path`); none: nowhere.
    pub cdr_url: Option<CollectorUrl>,
    /// Variables every call gets when it starts.
    pub vars: Vec<VarRule>,
    /// Session timers (RFC 4028): inserted as Session-Expires into INVITEs without one.
    pub session_expires: Option<Duration>,
    /// The smallest Session-Expires accepted; smaller ones get 422 with Min-SE.
    pub min_se: Duration,
}

/// A dialog variable set when a call starts (`[[dialog.var]]`): from exactly one of a
/// constant, an attribute of the authenticated subscriber, or a header of the INVITE;
/// an integer when `integer` is set and the text is one (else the call goes without it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VarRule {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub attr: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub integer: bool,
}

impl VarRule {
    /// Exactly one source is named.
    pub fn check(&self) -> Result<(), String> {
        let sources = [&self.value, &self.attr, &self.header]
            .iter()
            .filter(|s| s.is_some())
            .count();
        if self.name.is_empty() || sources != 1 {
            return Err(format!(
                "dialog.var {:?}: a name and exactly one of value, attr, header",
                self.name
            ));
        }
        Ok(())
    }

    pub(super) fn eval(&self, msg: &Message, origin: &Origin) -> Option<Var> {
        let text = match (&self.value, &self.attr, &self.header) {
            (Some(v), _, _) => v.clone(),
            (_, Some(a), _) => origin.attrs.get(a)?.clone(),
            (_, _, Some(h)) => msg.get_other(h)?.to_owned(),
            _ => return None,
        };
        if self.integer {
            text.trim().parse().ok().map(Var::Int)
        } else {
            Some(Var::Str(text))
        }
    }
}

impl Default for DialogSettings {
    fn default() -> Self {
        Self {
            track: true,
            lifetime: Duration::from_secs(12 * 3600),
            reject_unmatched: false,
            max_dialogs: 1_000_000,
            profiles: Vec::new(),
            classes: Vec::new(),
            limits: Vec::new(),
            cdr_file: None,
            cdr_rotate_bytes: 64 << 20,
            cdr_url: None,
            vars: Vec::new(),
            session_expires: None,
            min_se: Duration::from_secs(90),
        }
    }
}
