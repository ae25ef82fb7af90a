//! A confirmed call as the dialog journal keeps it (the seed's `db_mode`): written by hand
//! as the JSON serde writes for [`Saved`], read back with serde into a call.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use limes_cluster::json;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::cdr::Var;
use super::profiles::Membership;
use super::{Call, CallState, Origin, Phase};
use crate::transport::Dest;

/// A confirmed call as the journal keeps it: written from the call's own text (borrowed),
/// read back owned.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Saved<'a> {
    pub(super) call_id: Cow<'a, str>,
    pub(super) caller_tag: Cow<'a, str>,
    pub(super) from: Cow<'a, str>,
    pub(super) to: Cow<'a, str>,
    pub(super) request_uri: Cow<'a, str>,
    pub(super) caller: Cow<'a, str>,
    pub(super) source: Cow<'a, str>,
    pub(super) call_limit: Option<u32>,
    pub(super) class: Option<Cow<'a, str>>,
    pub(super) setup_ms: u64,
    pub(super) caller_dest: Dest,
    pub(super) caller_contact: Cow<'a, str>,
    pub(super) callee_tag: Cow<'a, str>,
    pub(super) callee_contact: Option<Cow<'a, str>>,
    pub(super) record_route: Cow<'a, [String]>,
    pub(super) answer_ms: Option<u64>,
    pub(super) status: u16,
    pub(super) caller_cseq: u32,
    pub(super) callee_cseq: Option<u32>,
    pub(super) profiles: Cow<'a, [(String, String)]>,
    pub(super) vars: Cow<'a, BTreeMap<String, Var>>,
    #[serde(default)]
    pub(super) session_s: Option<u32>,
}

impl Saved<'_> {
    /// The call again, confirmed, with the profile counts it holds.
    pub(super) fn into_call(self, id: u64, memberships: Vec<Membership>) -> Call {
        Call {
            id,
            call_id: self.call_id.into_owned(),
            caller_tag: self.caller_tag.into_owned(),
            from: self.from.into_owned(),
            to: self.to.into_owned(),
            request_uri: self.request_uri.into_owned(),
            origin: Origin {
                caller: self.caller.into_owned(),
                source: Arc::from(self.source),
                call_limit: self.call_limit,
                attrs: BTreeMap::new(),
            },
            class: self.class.map(Cow::into_owned),
            setup_ms: self.setup_ms,
            caller_dest: self.caller_dest,
            caller_contact: self.caller_contact.into_owned(),
            state: Mutex::new(CallState {
                phase: Phase::Confirmed,
                callee_tag: Some(self.callee_tag.into_owned()),
                early_tags: SmallVec::new(),
                callee_contact: self.callee_contact.map(Cow::into_owned),
                record_route: self.record_route.into_owned(),
                answer_ms: self.answer_ms,
                status: self.status,
                caller_cseq: self.caller_cseq,
                callee_cseq: self.callee_cseq,
                profiles: self.profiles.into_owned(),
                memberships,
                vars: self.vars.into_owned(),
                ended_by: None,
                session: self.session_s.map(|n| Duration::from_secs(u64::from(n))),
            }),
        }
    }
}

/// A confirmed call as the journal keeps it (JSON); `None` before its answer.
pub(super) fn saved_text(call: &Call) -> Option<String> {
    let s = call.state.lock();
    let callee_tag = s.callee_tag.as_deref()?;
    let mut out = String::with_capacity(1024);
    let mut o = json::Object::new(&mut out);
    o.str("call_id", &call.call_id)
        .str("caller_tag", &call.caller_tag)
        .str("from", &call.from)
        .str("to", &call.to)
        .str("request_uri", &call.request_uri)
        .str("caller", &call.origin.caller)
        .str("source", &call.origin.source)
        .opt_int("call_limit", call.origin.call_limit)
        .opt_str("class", call.class.as_deref())
        .int("setup_ms", call.setup_ms);
    push_dest(o.member("caller_dest"), &call.caller_dest);
    o.str("caller_contact", &call.caller_contact)
        .str("callee_tag", callee_tag)
        .opt_str("callee_contact", s.callee_contact.as_deref());
    json::push_str_array(
        o.member("record_route"),
        s.record_route.iter().map(String::as_str),
    );
    o.opt_int("answer_ms", s.answer_ms)
        .int("status", s.status)
        .int("caller_cseq", s.caller_cseq)
        .opt_int("callee_cseq", s.callee_cseq);
    let profiles = o.member("profiles");
    profiles.push('[');
    for (i, (name, value)) in s.profiles.iter().enumerate() {
        if i > 0 {
            profiles.push(',');
        }
        json::push_str_array(profiles, [name.as_str(), value.as_str()]);
    }
    profiles.push(']');
    super::cdr::push_vars(o.member("vars"), &s.vars);
    o.opt_int("session_s", s.session.map(|d| d.as_secs() as u32));
    o.end();
    Some(out)
}

/// A destination as serde writes [`Dest`]: `{"transport":..,"addr":..[,"local":..]}`.
fn push_dest(out: &mut String, dest: &Dest) {
    let mut o = json::Object::new(out);
    o.str("transport", dest.transport.as_str());
    push_addr(o.member("addr"), dest.addr);
    if let Some(local) = dest.local {
        push_addr(o.member("local"), local);
    }
    o.end();
}

fn push_addr(out: &mut String, addr: SocketAddr) {
    match addr {
        // A scope is written only by `Display`.
        SocketAddr::V6(a) if a.scope_id() != 0 => json::push_str(out, &a.to_string()),
        _ => {
            out.push('"');
            crate::proxy::local::push_host_port(out, addr);
            out.push('"');
        }
    }
}
