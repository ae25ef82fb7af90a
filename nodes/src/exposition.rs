//! What `/metrics` answers: OpenMetrics when the scraper asks for it (Prometheus does,
//! in its `Accept` header), else the Prometheus text format 0.0.4 that every other tool
//! reads (`promtool check metrics`, curl, older agents); prometheus-client writes both.
//! Also the node's process metrics, read from `/proc`, and its build.

use std::fs;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE as TEXT;

/// Whether an `Accept` header asks for OpenMetrics (a media range of it with a q above 0).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            parts
                .next()
                .is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"))
                && !parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        })
    })
}

/// Linux's clock tick for `/proc` times (`USER_HZ`, fixed at 100 by the kernel's ABI on
/// every architecture Limes runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// The standard `process_*` metrics of this process, read from `/proc` at each scrape.
#[derive(Debug)]
pub struct ProcessCollector;

/// The figures [`ProcessCollector`] exports; `None` where `/proc` did not say.
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_seconds: f64,
    start_time_seconds: f64,
    threads: i64,
    virtual_bytes: i64,
    resident_bytes: i64,
    open_fds: i64,
    max_fds: i64,
}

/// The fields of `/proc/self/stat` after the command name (which may hold spaces).
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

impl Process {
    fn read() -> Self {
        let mut p = Process::default();
        let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let f = stat_fields(&stat);
        // After ")": state is field 3 of proc(5), so field N is f[N - 3].
        let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        p.cpu_seconds = (num(14).unwrap_or(0.0) + num(15).unwrap_or(0.0)) / TICKS_PER_SECOND;
        p.threads = num(20).unwrap_or(0.0) as i64;
        p.virtual_bytes = num(23).unwrap_or(0.0) as i64;
        let boot = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        p.start_time_seconds = boot + num(22).unwrap_or(0.0) / TICKS_PER_SECOND;
        p.resident_bytes = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("VmRSS:")?
                        .trim()
                        .strip_suffix(" kB")?
                        .parse::<i64>()
                        .ok()
                })
            })
            .map_or(0, |kb| kb * 1024);
        p.open_fds = fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
        p.max_fds = fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("Max open files")?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
            })
            .unwrap_or(0);
        p
    }
}

/// Encodes each `(name, help, metric)` as a family of one series with no labels (what a
/// collector reads off its source at each scrape).
pub fn encode_each<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    metrics: impl IntoIterator<Item = (&'static str, &'static str, M)>,
) -> Result<(), std::fmt::Error> {
    for (name, help, m) in metrics {
        m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
    }
    Ok(())
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let p = Process::read();
        encode_each(
            &mut encoder,
            [(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                ConstCounter::new(p.cpu_seconds),
            )],
        )?;
        encode_each(
            &mut encoder,
            [(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                ConstGauge::new(p.start_time_seconds),
            )],
        )?;
        let gauges = [
            ("process_threads", "Threads of the process", p.threads),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size, in bytes",
                p.virtual_bytes,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size, in bytes",
                p.resident_bytes,
            ),
            ("process_open_fds", "Open file descriptors", p.open_fds),
            (
                "process_max_fds",
                "The limit of open file descriptors",
                p.max_fds,
            ),
        ];
        encode_each(
            &mut encoder,
            gauges.map(|(n, h, v)| (n, h, ConstGauge::new(v))),
        )
    }
}

/// `limes_build_info{version,commit} 1`.
pub fn register_build_info(registry: &mut prometheus_client::registry::Registry) {
    let info = prometheus_client::metrics::family::Family::<
        Vec<(&'static str, &'static str)>,
        prometheus_client::metrics::gauge::Gauge,
    >::default();
    info.get_or_create(&vec![
        ("version", env!("CARGO_PKG_VERSION")),
        ("commit", env!("LIMES_COMMIT")),
    ])
    .set(1);
    registry.register(
        "limes_build_info",
        "The running build: its version and commit (always 1)",
        info,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let cases = [
            (Some(prometheus), true),
            (Some("application/openmetrics-text; version=1.0.0"), true),
            (Some("text/plain;version=0.0.4"), false),
            (Some("*/*"), false),
            (Some("application/openmetrics-text;q=0, text/plain"), false),
            (None, false),
        ];
        for (accept, om) in cases {
            assert_eq!(wants_openmetrics(accept), om, "{accept:?}");
        }
    }

    #[test]
    fn proc_stat_fields_survive_a_command_name_with_spaces_and_parens() {
        let stat = "4242 (limes (a) b) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 7 0 12345 1000000 300";
        let f = stat_fields(stat);
        assert_eq!(f[0], "S", "field 3");
        assert_eq!(f[14 - 3], "250", "utime");
        assert_eq!(f[20 - 3], "7", "threads");
        assert_eq!(f[22 - 3], "12345", "starttime");
    }

    #[test]
    fn this_process_is_read_from_proc() {
        let p = Process::read();
        assert!(
            p.threads >= 1 && p.resident_bytes > 0 && p.open_fds > 0,
            "{p:?}"
        );
        assert!(
            p.max_fds >= p.open_fds && p.start_time_seconds > 1.6e9,
            "{p:?}"
        );
    }
}
