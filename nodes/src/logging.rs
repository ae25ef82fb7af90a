//! The node's log: `tracing` to stderr, text or JSON, every line carrying the node's
//! name, colour only when stderr is a terminal, and a level that is checked before use
//! and can be changed while the node runs (on reload and by `core.set_log_level`).

use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::bail;
use parking_lot::Mutex;
use tracing::Subscriber;
use tracing_subscriber::fmt::format::{Format, Full, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a log level: one of `error warn info debug trace off`, or a list of them with
/// targets (`info,limes_actors=debug`). Anything else is refused: an unknown word would
/// otherwise be taken as a target name and silence the whole log.
pub fn check_level(level: &str) -> anyhow::Result<()> {
    if level.trim().is_empty() {
        bail!("log.level is empty (one of {})", LEVELS.join(", "));
    }
    for part in level.split(',') {
        let part = part.trim();
        let (target, lvl) = match part.split_once('=') {
            Some((t, l)) => (Some(t.trim()), l.trim()),
            None => (None, part),
        };
        if let Some(t) = target {
            let ok = !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'-');
            if !ok {
                bail!("log.level {level:?}: {t:?} is not a module name");
            }
        }
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(lvl)) {
            bail!(
                "log.level {level:?}: {lvl:?} is not a level (one of {})",
                LEVELS.join(", ")
            );
        }
    }
    Ok(())
}

/// Writes each line as the inner format would, with the node's name added: `node=NAME`
/// after the timestamp in text, a `"node"` member in JSON.
struct WithNode<F> {
    node: String,
    json: bool,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for WithNode<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        if self.json {
            let name = serde_json::to_string(&self.node).map_err(|_| fmt::Error)?;
            match line.strip_prefix('{') {
                Some(rest) => write!(writer, "{{\"node\":{name},{rest}"),
                None => writer.write_str(&line),
            }
        } else {
            match line.split_once(' ') {
                Some((time, rest)) => write!(writer, "{time} node={} {rest}", self.node),
                None => writer.write_str(&line),
            }
        }
    }
}

/// Changes the running level.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    level: Arc<Mutex<String>>,
}

impl LogControl {
    pub fn level(&self) -> String {
        self.level.lock().clone()
    }

    /// Checks and applies `level`; returns the one it replaced.
    pub fn set(&self, level: &str) -> anyhow::Result<String> {
        check_level(level)?;
        let filter = EnvFilter::try_new(level)?;
        self.handle.reload(filter)?;
        Ok(std::mem::replace(&mut *self.level.lock(), level.to_owned()))
    }
}

/// Starts the log at `level` (checked by the configuration already; `RUST_LOG`, when
/// set, wins at start).
pub fn init(level: &str, json: bool, node: &str) -> anyhow::Result<LogControl> {
    check_level(level)?;
    let start = std::env::var("RUST_LOG")
        .ok()
        .filter(|l| check_level(l).is_ok())
        .unwrap_or_else(|| level.to_owned());
    let (filter, handle) = reload::Layer::new(EnvFilter::try_new(&start)?);
    let ansi = std::io::stderr().is_terminal();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        let format: Format<Json> = Format::default().json();
        registry
            .with(layer.fmt_fields(JsonFields::new()).event_format(WithNode {
                node: node.to_owned(),
                json: true,
                inner: format,
            }))
            .try_init()?;
    } else {
        let format: Format<Full> = Format::default().with_ansi(ansi);
        registry
            .with(layer.event_format(WithNode {
                node: node.to_owned(),
                json: false,
                inner: format,
            }))
            .try_init()?;
    }
    Ok(LogControl {
        handle,
        level: Arc::new(Mutex::new(start)),
    })
}

#[cfg(test)]
mod tests {
    use super::check_level;

    #[test]
    fn levels() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "warn,limes_actors=debug",
            "limes::run=trace",
        ] {
            assert!(check_level(ok).is_ok(), "{ok}");
        }
        for bad in [
            "verbose",
            "",
            "info,",
            "=debug",
            "limes_actors=loud",
            "info debug",
        ] {
            assert!(check_level(bad).is_err(), "{bad:?}");
        }
    }
}
