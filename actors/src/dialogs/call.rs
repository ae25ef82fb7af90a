//! One tracked call ([`Call`]): what the INVITE said (Call-ID, tags, From, To, origin,
//! caller's flow and contact), and behind a lock what the dialog has become since (phase,
//! callee's tag and contact, route set, CSeqs, profiles, variables, session interval).
//! [`CallView`] is how `dlg.list` shows it, [`Sides`] what the node's BYEs need.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use limes_sip::Message;
use parking_lot::Mutex;
use serde::Serialize;
use smallvec::SmallVec;

use super::cdr::{EndedBy, Var};
use super::profiles;
use crate::transport::Dest;

/// Where a dialog is (Kamailio's states 1-5, less the ones a proxy cannot tell apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The INVITE was relayed; no response with a To tag yet.
    Setup,
    /// A provisional response with a To tag came back.
    Early,
    /// Answered (2xx).
    Confirmed,
    Ended,
}

/// Who the call is from, as the edge classified it.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The authenticated user, else the From user.
    pub caller: String,
    /// `subscriber`, or the trusted peer's or address group's tag (`trusted`, `carrier`);
    /// shared with the tables (no copy per call).
    pub source: Arc<str>,
    pub call_limit: Option<u32>,
    /// The authenticated subscriber's attributes (dialog variables may read them).
    pub attrs: BTreeMap<String, String>,
}

/// One tracked call: the caller's INVITE and, once answered, the dialog of the 2xx.
#[derive(Debug)]
pub struct Call {
    /// The node's number for it (`dlg.end_dlg`).
    pub id: u64,
    pub call_id: String,
    pub caller_tag: String,
    /// From, To and Request-URI of the INVITE, as sent.
    pub from: String,
    pub to: String,
    pub request_uri: String,
    pub origin: Origin,
    pub class: Option<String>,
    pub setup_ms: u64,
    /// Where the caller is reached: the flow its INVITE came on.
    pub caller_dest: Dest,
    /// The caller's Contact URI.
    pub caller_contact: String,
    pub(super) state: Mutex<CallState>,
}

#[derive(Debug)]
pub(super) struct CallState {
    pub(super) phase: Phase,
    /// The To tag of the answer (the confirmed dialog).
    pub(super) callee_tag: Option<String>,
    /// The To tags of the early dialogs (forks that sent a tagged 1xx), until the answer.
    pub(super) early_tags: SmallVec<[String; 2]>,
    pub(super) callee_contact: Option<String>,
    /// Record-Route values of the answer, in order (§12.1.2).
    pub(super) record_route: Vec<String>,
    pub(super) answer_ms: Option<u64>,
    /// The INVITE's final status (0 until one is sent).
    pub(super) status: u16,
    pub(super) caller_cseq: u32,
    pub(super) callee_cseq: Option<u32>,
    pub(super) profiles: Vec<(String, String)>,
    /// Given back when the call ends.
    pub(super) memberships: Vec<profiles::Membership>,
    pub(super) vars: BTreeMap<String, Var>,
    pub(super) ended_by: Option<EndedBy>,
    /// The session interval the answer agreed (RFC 4028): a refresh must come within it.
    pub(super) session: Option<Duration>,
}

/// The delta-seconds of a Session-Expires header (`x` in compact form), if any.
pub fn session_expires(msg: &Message) -> Option<u32> {
    let v = msg
        .get_other("Session-Expires")
        .or_else(|| msg.get_other("x"))?;
    v.split(';').next()?.trim().parse().ok()
}

/// What the BYEs of the node need from a confirmed dialog.
#[derive(Debug, Clone)]
pub struct Sides {
    pub callee_tag: String,
    pub callee_contact: String,
    pub record_route: Vec<String>,
    pub caller_cseq: u32,
    pub callee_cseq: Option<u32>,
}

/// A dialog as `dlg.list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CallView {
    pub id: u64,
    pub call_id: String,
    pub from: String,
    pub to: String,
    pub request_uri: String,
    pub state: Phase,
    pub caller: String,
    pub source: String,
    pub class: Option<String>,
    pub caller_tag: String,
    pub callee_tag: Option<String>,
    pub caller_contact: String,
    pub callee_contact: Option<String>,
    pub caller_cseq: u32,
    pub callee_cseq: Option<u32>,
    pub init_ts: u64,
    pub start_ts: Option<u64>,
    pub status: u16,
    pub profiles: Vec<String>,
    pub variables: BTreeMap<String, Var>,
}

impl Call {
    pub fn phase(&self) -> Phase {
        self.state.lock().phase
    }

    /// The session interval agreed by the answer or the last refresh (RFC 4028).
    pub fn session_interval(&self) -> Option<Duration> {
        self.state.lock().session
    }

    /// When the call was answered (Unix milliseconds).
    pub fn answer_ms(&self) -> Option<u64> {
        self.state.lock().answer_ms
    }

    /// The answer's side, once confirmed.
    pub fn sides(&self) -> Option<Sides> {
        let s = self.state.lock();
        Some(Sides {
            callee_tag: s.callee_tag.clone()?,
            callee_contact: s.callee_contact.clone()?,
            record_route: s.record_route.clone(),
            caller_cseq: s.caller_cseq,
            callee_cseq: s.callee_cseq,
        })
        .filter(|_| s.phase == Phase::Confirmed)
    }

    /// Gives the node's own request towards a side its CSeq number (one above the last).
    pub fn next_cseq(&self, towards_callee: bool) -> u32 {
        let mut s = self.state.lock();
        if towards_callee {
            s.caller_cseq = s.caller_cseq.saturating_add(1);
            s.caller_cseq
        } else {
            let n = s.callee_cseq.map_or(1, |n| n.saturating_add(1));
            s.callee_cseq = Some(n);
            n
        }
    }

    pub fn set_var(&self, name: &str, value: Var) {
        self.state.lock().vars.insert(name.to_owned(), value);
    }

    pub fn view(&self) -> CallView {
        let s = self.state.lock();
        CallView {
            id: self.id,
            call_id: self.call_id.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            request_uri: self.request_uri.clone(),
            state: s.phase,
            caller: self.origin.caller.clone(),
            source: self.origin.source.to_string(),
            class: self.class.clone(),
            caller_tag: self.caller_tag.clone(),
            callee_tag: s.callee_tag.clone(),
            caller_contact: self.caller_contact.clone(),
            callee_contact: s.callee_contact.clone(),
            caller_cseq: s.caller_cseq,
            callee_cseq: s.callee_cseq,
            init_ts: self.setup_ms / 1000,
            start_ts: s.answer_ms.map(|ms| ms / 1000),
            status: s.status,
            profiles: s.profiles.iter().map(|(p, v)| profile_text(p, v)).collect(),
            variables: s.vars.clone(),
        }
    }

    pub(super) fn in_profile(&self, profile: &str, value: Option<&str>) -> bool {
        self.state
            .lock()
            .profiles
            .iter()
            .any(|(p, v)| p == profile && value.is_none_or(|want| want == v))
    }
}

pub(super) fn profile_text(profile: &str, value: &str) -> String {
    if value.is_empty() {
        return profile.to_owned();
    }
    let mut text = String::with_capacity(profile.len() + 1 + value.len());
    text.push_str(profile);
    text.push('=');
    text.push_str(value);
    text
}
