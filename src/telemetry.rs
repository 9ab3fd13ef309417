//! Logging: the `tracing` subscriber, pretty or JSON (one object per line, with the spans around
//! each event), writing to stderr so stdout stays for command output.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Install the global subscriber, writing to stderr (stdout is for command output such as
/// `connections token`); a second call (tests) is a no-op.
pub fn init(rust_log: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(rust_log).unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Pretty => fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr).try_init(),
        LogFormat::Json => fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // Every span around the event, outermost first: a line logged while handling a request
            // carries the request span's id, however deep the code that logged it.
            .with_current_span(false)
            .with_span_list(true)
            .flatten_event(true)
            .try_init(),
    };
    let _ = result;
}
