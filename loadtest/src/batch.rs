//! Batched UDP I/O for the load threads: `recvmmsg` reads up to [`BATCH`] datagrams per
//! system call, and every datagram a socket queued during one turn of the loop leaves in
//! one `sendmmsg`. Both through `nix`'s safe wrappers.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Room for one datagram; a longer one is cut, seen as truncated and dropped.
const SLOT: usize = 16 * 1024;

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Reads datagrams in batches.
pub struct Receiver {
    buf: Vec<u8>,
    headers: MultiHeaders<SockaddrStorage>,
    got: Vec<(usize, Option<SocketAddr>, bool)>,
    /// Datagrams longer than a slot, dropped.
    pub truncated: u64,
}

impl Default for Receiver {
    fn default() -> Self {
        Self {
            buf: vec![0; SLOT * BATCH],
            headers: MultiHeaders::preallocate(BATCH, None),
            got: Vec::with_capacity(BATCH),
            truncated: 0,
        }
    }
}

impl Receiver {
    /// Reads until the socket has nothing more; `each(datagram, source)` for every one.
    pub fn drain(&mut self, sock: &impl AsRawFd, mut each: impl FnMut(&[u8], SocketAddr)) {
        loop {
            self.got.clear();
            {
                let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
                    .buf
                    .chunks_mut(SLOT)
                    .map(|c| [IoSliceMut::new(c)])
                    .collect();
                let Ok(results) = recvmmsg(
                    sock.as_raw_fd(),
                    &mut self.headers,
                    slices.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) else {
                    return; // would block, or failed: either way nothing more now
                };
                for r in results {
                    let cut = r.flags.contains(MsgFlags::MSG_TRUNC);
                    self.got
                        .push((r.bytes, r.address.as_ref().and_then(to_std), cut));
                }
            }
            for (i, &(len, from, cut)) in self.got.iter().enumerate() {
                match from {
                    Some(from) if !cut => each(&self.buf[i * SLOT..i * SLOT + len], from),
                    _ => self.truncated += 1,
                }
            }
            if self.got.len() < BATCH {
                return;
            }
        }
    }
}

/// Datagrams queued for one socket until the loop flushes them.
pub struct Outbox {
    data: Vec<u8>,
    items: Vec<(usize, usize, SocketAddr)>,
    headers: MultiHeaders<SockaddrStorage>,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            data: Vec::new(),
            items: Vec::new(),
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }
}

impl Outbox {
    pub fn push(&mut self, to: SocketAddr, bytes: &[u8]) {
        self.items.push((self.data.len(), bytes.len(), to));
        self.data.extend_from_slice(bytes);
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sends everything queued, [`BATCH`] per call. What a full socket buffer refuses is
    /// lost, as on a network: the transaction timers retransmit it.
    pub fn flush(&mut self, sock: &impl AsRawFd) {
        for chunk in self.items.chunks(BATCH) {
            let slices: Vec<[IoSlice<'_>; 1]> = chunk
                .iter()
                .map(|&(at, len, _)| [IoSlice::new(&self.data[at..at + len])])
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> = chunk
                .iter()
                .map(|(_, _, to)| Some(SockaddrStorage::from(*to)))
                .collect();
            let no_cmsgs: [ControlMessage<'_>; 0] = [];
            let _ = sendmmsg(
                sock.as_raw_fd(),
                &mut self.headers,
                &slices,
                &addrs,
                no_cmsgs,
                MsgFlags::MSG_DONTWAIT,
            );
        }
        self.items.clear();
        self.data.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_out_and_comes_back_whole() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("binds");
        let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("binds");
        b.set_nonblocking(true).expect("nonblocking");
        let to = b.local_addr().expect("bound");
        let mut out = Outbox::default();
        let sent: Vec<String> = (0..BATCH * 2 + 5)
            .map(|i| format!("datagram {i}"))
            .collect();
        for s in &sent {
            out.push(to, s.as_bytes());
        }
        out.flush(&a);
        assert!(out.is_empty());
        let mut r = Receiver::default();
        let mut got = Vec::new();
        let from = a.local_addr().expect("bound");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while got.len() < sent.len() && std::time::Instant::now() < deadline {
            r.drain(&b, |d, src| {
                assert_eq!(src, from);
                got.push(String::from_utf8_lossy(d).into_owned());
            });
        }
        assert_eq!(got, sent, "every datagram, in order, over several batches");
    }
}
