//! Dialogs as a proxy in the middle sees them (RFC 3261 §12): created by a response with a
//! To tag to an INVITE, early on 1xx, confirmed on 2xx, terminated by a failure, a BYE or
//! a timeout. Both sides' targets and CSeq numbers are tracked, and [`CSeqTranslation`]
//! shifts the caller's numbers after an upstream authentication retry.

use crate::cseq::MAX_SEQ;
use crate::message::Message;
use crate::method::Method;

/// Call-ID and both tags: the dialog's identity (§12).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    /// The From tag of the INVITE.
    pub caller_tag: String,
    /// The To tag of the response that made the dialog.
    pub callee_tag: String,
}

impl DialogId {
    /// The dialog an in-dialog request belongs to, from either direction: the pair of tags
    /// is ordered by who sent the INVITE, which a request from the callee reverses, so both
    /// orders are given and the caller tries each.
    pub fn of_request(msg: &Message) -> Option<(DialogId, DialogId)> {
        let call_id = msg.call_id()?.to_owned();
        let from = msg.from_tag()?.to_owned();
        let to = msg.to_tag()?.to_owned();
        Some((
            DialogId {
                call_id: call_id.clone(),
                caller_tag: from.clone(),
                callee_tag: to.clone(),
            },
            DialogId {
                call_id,
                caller_tag: to,
                callee_tag: from,
            },
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    Early,
    Confirmed,
    Terminated,
}

/// Why a dialog refused an input; `status` is what the request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DialogError {
    pub status: u16,
    pub reason: &'static str,
}

/// One side of a dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// The remote target: the URI of this side's last Contact.
    pub target: String,
    /// The highest CSeq number seen in a request from this side.
    pub cseq: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub id: DialogId,
    state: DialogState,
    /// Record-Route values as the dialog-creating response carried them.
    record_route: Vec<String>,
    pub caller: Side,
    pub callee: Side,
    pub cseq: CSeqTranslation,
}

impl Dialog {
    /// A dialog from an INVITE and a 101-299 response with a To tag (§12.1).
    pub fn new(invite: &Message, response: &Message) -> Result<Self, DialogError> {
        const NO_DIALOG: DialogError = DialogError {
            status: 400,
            reason: "response creates no dialog",
        };
        let status = response.status().ok_or(NO_DIALOG)?;
        if !(101..300).contains(&status) {
            return Err(NO_DIALOG);
        }
        let id = DialogId {
            call_id: invite.call_id().ok_or(NO_DIALOG)?.to_owned(),
            caller_tag: invite.from_tag().ok_or(NO_DIALOG)?.to_owned(),
            callee_tag: response.to_tag().ok_or(NO_DIALOG)?.to_owned(),
        };
        let cseq = invite.cseq().and_then(Result::ok).ok_or(NO_DIALOG)?.seq;
        let mut dialog = Dialog {
            id,
            state: DialogState::Early,
            record_route: Vec::new(),
            caller: Side {
                target: contact_uri(invite).unwrap_or_default(),
                cseq: Some(cseq),
            },
            callee: Side {
                target: String::new(),
                cseq: None,
            },
            cseq: CSeqTranslation::default(),
        };
        dialog.on_response(&Method::Invite, response);
        Ok(dialog)
    }

    pub fn state(&self) -> DialogState {
        self.state
    }

    /// §12.1.2: the caller's route set is the Record-Route list reversed.
    pub fn route_set_towards_callee(&self) -> impl Iterator<Item = &str> {
        self.record_route.iter().rev().map(String::as_str)
    }

    /// §12.1.1: the callee's route set is the Record-Route list in order.
    pub fn route_set_towards_caller(&self) -> impl Iterator<Item = &str> {
        self.record_route.iter().map(String::as_str)
    }

    /// A response to a request in (or creating) this dialog.
    pub fn on_response(&mut self, method: &Method, response: &Message) {
        let status = response.status().unwrap_or(0);
        match (self.state, method) {
            (DialogState::Terminated, _) => {}
            // §12.1: 1xx with a tag keeps the dialog early; 2xx confirms it and fixes the
            // route set; a later 2xx refreshes the target only (§12.2.1.2).
            (DialogState::Early, Method::Invite) if (101..300).contains(&status) => {
                self.update_callee_target(response);
                self.record_route = response
                    .record_routes()
                    .filter_map(Result::ok)
                    .map(|r| r.uri.to_owned())
                    .collect();
                if status >= 200 {
                    self.state = DialogState::Confirmed;
                }
            }
            // An early dialog ends when the INVITE fails (§12.3).
            (DialogState::Early, Method::Invite) if status >= 300 => {
                self.state = DialogState::Terminated
            }
            (DialogState::Confirmed, Method::Invite | Method::Update)
                if (200..300).contains(&status) =>
            {
                self.update_callee_target(response)
            }
            // §12.2.1.2: 481 or 408 to an in-dialog request ends the dialog.
            (_, m) if *m != Method::Invite && (status == 481 || status == 408) => {
                self.state = DialogState::Terminated
            }
            _ => {}
        }
    }

    /// A request inside the dialog, from the caller or the callee (§12.2.2): its CSeq must
    /// grow (ACK and CANCEL reuse the INVITE's); a BYE ends the dialog.
    pub fn on_request(
        &mut self,
        from_caller: bool,
        method: &Method,
        cseq: u32,
    ) -> Result<(), DialogError> {
        if self.state == DialogState::Terminated {
            return Err(DialogError {
                status: 481,
                reason: "Call/Transaction Does Not Exist",
            });
        }
        let side = if from_caller {
            &mut self.caller
        } else {
            &mut self.callee
        };
        if !matches!(method, Method::Ack | Method::Cancel) {
            if side.cseq.is_some_and(|last| cseq <= last) {
                return Err(DialogError {
                    status: 500,
                    reason: "CSeq out of order",
                });
            }
            side.cseq = Some(cseq);
        }
        if *method == Method::Bye {
            self.state = DialogState::Terminated;
        }
        Ok(())
    }

    /// Timer expiry or a failure outside SIP ends the dialog.
    pub fn terminate(&mut self) {
        self.state = DialogState::Terminated;
    }

    fn update_callee_target(&mut self, response: &Message) {
        if let Some(uri) = contact_uri(response) {
            self.callee.target = uri;
        }
    }
}

fn contact_uri(msg: &Message) -> Option<String> {
    msg.contacts().next()?.ok().map(|c| c.uri.to_owned())
}

/// CSeq renumbering for requests the caller sends towards the callee, after this element
/// re-sent one with credentials (RFC 3261 §22.2: the retry carries CSeq + 1, so every
/// later caller request must be shifted by the same amount, and the responses shifted
/// back). Requests from the callee keep their numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CSeqTranslation {
    offset: u32,
}

impl CSeqTranslation {
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// One more retry was sent: shift by one more.
    pub fn bump(&mut self) {
        self.offset = self.offset.saturating_add(1);
    }

    /// The number a caller's request carries towards the callee; `None` when the shift
    /// would leave the valid range (the request is answered 500).
    pub fn to_callee(&self, caller_seq: u32) -> Option<u32> {
        caller_seq
            .checked_add(self.offset)
            .filter(|&n| n <= MAX_SEQ)
    }

    /// The number a response from the callee carries back to the caller.
    pub fn to_caller(&self, callee_seq: u32) -> Option<u32> {
        callee_seq.checked_sub(self.offset)
    }
}

#[cfg(test)]
mod tests;
