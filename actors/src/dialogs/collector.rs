//! CDRs posted to an HTTP collector (`dialog.cdr_url`): JSON arrays of up to [`BATCH`]
//! records, each with its unique `Id`. Records wait in a journal in the state directory
//! (`cdr-queue`) until the collector answers 2xx, so a collector that is down, or a node
//! restart, loses none: delivery is at least once, and a collector that saw an `Id` before
//! keeps one. Retries back off from one second to [`MAX_BACKOFF`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use limes_cluster::journal::Record;
use limes_cluster::Journal;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tracing::{debug, info, warn};

/// Records per POST.
pub const BATCH: usize = 100;
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Records waiting for the collector at most; past it new ones are not queued (they are in
/// the CDR file) and are counted, so a collector down for days cannot exhaust memory.
pub const MAX_QUEUED: usize = 1_000_000;
const TIMEOUT: Duration = Duration::from_secs(5);

/// `http://host:port/path`, checked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorUrl {
    /// `host:port` to connect to and to send as Host.
    pub authority: String,
    pub path: String,
}

impl CollectorUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: an http:// URL is needed"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        if authority.starts_with(':') || path.bytes().any(|b| b <= b' ') {
            return Err(format!("{url}: not a usable URL"));
        }
        Ok(Self {
            authority,
            path: path.to_owned(),
        })
    }
}

#[derive(Clone)]
pub struct CollectorMetrics {
    posted: Counter,
    failures: Counter,
    dropped: Counter,
}

impl CollectorMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            posted: Counter::default(),
            failures: Counter::default(),
            dropped: Counter::default(),
        };
        registry.register(
            "limes_cdrs_posted",
            "CDRs the collector accepted",
            m.posted.clone(),
        );
        registry.register(
            "limes_cdr_post_failures",
            "POSTs to the CDR collector that failed (each is retried)",
            m.failures.clone(),
        );
        registry.register(
            "limes_cdrs_not_queued",
            "CDRs not queued for the collector because its queue was full (they are in the CDR file)",
            m.dropped.clone(),
        );
        m
    }
}

/// The queue of CDRs for the collector.
pub struct Collector {
    url: CollectorUrl,
    queue: Journal,
    /// Records handed over since the last [`Collector::persist`].
    incoming: Mutex<Vec<(String, String)>>,
    /// Persisted, not yet accepted: id -> JSON.
    pending: Mutex<BTreeMap<String, String>>,
    metrics: CollectorMetrics,
}

impl Collector {
    /// Opens the queue in `state_dir`; records left by an earlier run are sent again.
    pub fn open(
        url: CollectorUrl,
        state_dir: &Path,
        metrics: CollectorMetrics,
    ) -> std::io::Result<Self> {
        let (queue, loaded) = Journal::open_map(state_dir, "cdr-queue")?;
        if !loaded.entries.is_empty() {
            info!(
                cdrs = loaded.entries.len(),
                "CDRs waiting for the collector from an earlier run"
            );
        }
        Ok(Self {
            url,
            queue,
            incoming: Mutex::new(Vec::new()),
            pending: Mutex::new(loaded.entries),
            metrics,
        })
    }

    /// Hands over one record (no system call); counted and not queued when the queue is
    /// full.
    pub fn push(&self, id: String, json: String) {
        if self.queued() >= MAX_QUEUED {
            self.metrics.dropped.inc();
            return;
        }
        self.incoming.lock().push((id, json));
    }

    /// Writes the records handed over into the queue journal (the once-a-second flush).
    pub fn persist(&self) {
        let incoming = std::mem::take(&mut *self.incoming.lock());
        if incoming.is_empty() {
            return;
        }
        let records: Vec<Record<'_>> = incoming
            .iter()
            .map(|(id, json)| Record::Put(id, json))
            .collect();
        if let Err(e) = self.queue.write_batch(&records) {
            warn!(error = %e, "CDR queue write failed; records kept for the next try");
            let mut back = self.incoming.lock();
            let later = std::mem::take(&mut *back);
            *back = incoming;
            back.extend(later);
            return;
        }
        self.pending.lock().extend(incoming);
    }

    /// Records waiting for the collector.
    pub fn queued(&self) -> usize {
        self.pending.lock().len() + self.incoming.lock().len()
    }

    /// Posts what is pending until `stop`; failures back off.
    pub fn run(&self, stop: &AtomicBool) {
        let mut backoff = Duration::from_secs(1);
        let mut next_try = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            if Instant::now() < next_try {
                continue;
            }
            match self.post_pending() {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(e) => {
                    self.metrics.failures.inc();
                    warn!(error = %e, collector = %self.url.authority, retry_in_s = backoff.as_secs(), "CDR collector unreachable; CDRs stay queued");
                    next_try = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Posts batches until nothing is pending.
    fn post_pending(&self) -> Result<(), String> {
        loop {
            let batch: Vec<(String, String)> = self
                .pending
                .lock()
                .iter()
                .take(BATCH)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if batch.is_empty() {
                return Ok(());
            }
            let body = format!(
                "[{}]",
                batch
                    .iter()
                    .map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            post(&self.url, &body)?;
            let deletes: Vec<Record<'_>> = batch.iter().map(|(k, _)| Record::Delete(k)).collect();
            if let Err(e) = self.queue.write_batch(&deletes) {
                // Sent again after a restart: at least once, and the Id tells.
                warn!(error = %e, "CDR queue delete failed");
            }
            {
                let mut pending = self.pending.lock();
                for (k, _) in &batch {
                    pending.remove(k);
                }
            }
            self.metrics.posted.inc_by(batch.len() as u64);
            debug!(cdrs = batch.len(), "CDRs posted");
            if self.queue.needs_compaction(1 << 20) {
                let pending = self.pending.lock().clone();
                let result = self.queue.compact(|put| {
                    for (k, v) in &pending {
                        put(k, v)?;
                    }
                    Ok(())
                });
                if let Err(e) = result {
                    warn!(error = %e, "CDR queue compaction failed");
                }
            }
        }
    }
}

/// One `POST` with a JSON body; `Ok` on a 2xx answer.
fn post(url: &CollectorUrl, body: &str) -> Result<(), String> {
    let addr = url
        .authority
        .to_socket_addrs()
        .map_err(|e| format!("resolving {}: {e}", url.authority))?
        .next()
        .ok_or_else(|| format!("{} resolves to nothing", url.authority))?;
    let mut s =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connecting: {e}"))?;
    s.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority,
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body.as_bytes()))
        .map_err(|e| format!("sending: {e}"))?;
    // The status line is all that is read (bounded).
    let mut answer = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut answer[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    let status = std::str::from_utf8(&answer[..n])
        .ok()
        .and_then(|t| t.split(' ').nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or("no HTTP status in the answer")?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("the collector answered {status}"))
    }
}

/// Starts the posting thread.
pub fn spawn(
    collector: Arc<Collector>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("cdr-post".into())
        .spawn(move || collector.run(&stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = CollectorUrl::parse("http://127.0.0.1:9000/cdr").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("127.0.0.1:9000", "/cdr")
        );
        let u = CollectorUrl::parse("http://collector.example").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("collector.example:80", "/")
        );
        assert!(CollectorUrl::parse("https://x/").is_err());
        assert!(CollectorUrl::parse("http://:80/").is_err());
        assert!(CollectorUrl::parse("http://h/a b").is_err());
    }
}
