//! Process logging: `tracing` to a writer (stderr), text or JSON, with a filter that can be
//! changed while running (the admin route `PUT /log-level`). Secrets are never logged. In JSON,
//! a job's stage marks (`domain::stage`) also carry `timestamp_us`, unix microseconds.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::LogFormat;
use crate::domain::stage::STAGE_TARGET;

struct Control {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

/// Set once, by `init`: the handle that swaps the filter.
static CONTROL: OnceLock<Control> = OnceLock::new();

fn parse(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(level).map_err(|e| format!("'{level}' is not a log filter: {e}"))
}

/// Logs to stderr at `level` (falls back to `info` if it does not parse) in `format`.
pub fn init(level: &str, format: LogFormat) {
    let ansi = std::io::stderr().is_terminal();
    init_with_writer(level, format, std::io::stderr, ansi);
}

/// Logs to `writer`; the first call in a process wins (later ones change nothing).
pub fn init_with_writer<W>(level: &str, format: LogFormat, writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (level, filter) = match parse(level) {
        Ok(filter) => (level.to_string(), filter),
        Err(_) => ("info".to_string(), EnvFilter::new("info")),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    let installed = match format {
        LogFormat::Text => Registry::default().with(filter).with(fmt).try_init(),
        LogFormat::Json => Registry::default()
            .with(filter)
            .with(
                fmt.json()
                    .event_format(StageStamped(tracing_subscriber::fmt::format().json())),
            )
            .try_init(),
    };
    if installed.is_ok() {
        let _ = CONTROL.set(Control {
            handle,
            current: Mutex::new(level),
        });
    }
}

/// The JSON format, with the stage marks also stamped `"timestamp_us":<unix µs>` (first field):
/// a number the benchmark reads as is, taken when the event is written, as `timestamp` is.
struct StageStamped(Format<Json>);

impl<S, N> FormatEvent<S, N> for StageStamped
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if event.metadata().target() != STAGE_TARGET {
            return self.0.format_event(ctx, writer, event);
        }
        let at_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"timestamp_us\":{at_us},{rest}"),
            None => writer.write_str(&line),
        }
    }
}

/// The filter in force, if this process's logging came from `init`.
pub fn level() -> Option<String> {
    let control = CONTROL.get()?;
    let current = control.current.lock().unwrap_or_else(|p| p.into_inner());
    Some(current.clone())
}

/// Replaces the filter (e.g. `debug`, `info,serverless_executor=trace`) without a restart.
pub fn set_level(level: &str) -> Result<(), LogLevelError> {
    let control = CONTROL.get().ok_or(LogLevelError::NotControllable)?;
    let filter = parse(level).map_err(LogLevelError::Invalid)?;
    control
        .handle
        .reload(filter)
        .map_err(|e| LogLevelError::Invalid(e.to_string()))?;
    *control.current.lock().unwrap_or_else(|p| p.into_inner()) = level.to_string();
    tracing::info!(level, "log level changed");
    Ok(())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogLevelError {
    #[error("{0}")]
    Invalid(String),
    #[error("this process's logging was not set up by the executor; its level cannot change")]
    NotControllable,
}
