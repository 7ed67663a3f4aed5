//! Logging set-up: `tracing` to stderr, as text or JSON lines. The level
//! filter sits behind a reload handle, so a config reload can change
//! `log.level` ([`set_level`]); the format needs a restart.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{LogConfig, LogFormat};

/// The installed filter's handle, and whether `RUST_LOG` chose it.
struct Level {
    handle: reload::Handle<EnvFilter, Registry>,
    from_env: bool,
}

static LEVEL: OnceLock<Level> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub fn init(config: &LogConfig) {
    let (filter, from_env) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, true),
        Err(_) => (
            EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info")),
            false,
        ),
    };
    let (filter, handle) = reload::Layer::new(filter);
    // Colours only on a terminal: a journal or a log file would keep the
    // escape codes (`NO_COLOR` turns them off on a terminal too).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match config.format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json()).try_init(),
    };
    if installed.is_ok() {
        let _ = LEVEL.set(Level { handle, from_env });
    }
}

/// What [`set_level`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum LevelChange {
    /// The new filter is in force.
    Applied,
    /// `RUST_LOG` chose the filter at start and keeps winning.
    Overridden,
    /// No subscriber of ours is installed (the proxy runs inside tests).
    NotInstalled,
}

/// Replaces the level filter (`log.level` on a config reload).
pub fn set_level(level: &str) -> Result<LevelChange, String> {
    let Some(current) = LEVEL.get() else {
        return Ok(LevelChange::NotInstalled);
    };
    if current.from_env {
        return Ok(LevelChange::Overridden);
    }
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    current
        .handle
        .reload(filter)
        .map(|()| LevelChange::Applied)
        .map_err(|e| e.to_string())
}
