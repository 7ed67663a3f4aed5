//! The `leasegate` command line: `run`, `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use leasegate::config::Config;
use leasegate::server::Server;

#[derive(Parser)]
#[command(
    name = "leasegate",
    version,
    about = "RESP sidecar proxy that fences writes on a node without a valid master lease"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The YAML config file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate a config file and print the effective settings.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Graceful failover from one leasegate's node to its replica's.
    Failover {
        /// Admin address (host:port) of the current master's leasegate.
        #[arg(long)]
        from: String,
        /// Admin address (host:port) of the replica's leasegate.
        #[arg(long)]
        to: String,
        #[arg(long, default_value_t = 100)]
        sync_timeout_ms: u64,
        #[arg(long, default_value_t = 500)]
        pause_timeout_ms: u64,
        /// Switch even when the replica has not caught up within the sync timeout.
        #[arg(long)]
        force_on_timeout: bool,
        /// Lease granted to the new master (the controller renews it afterwards).
        #[arg(long, default_value_t = 10_000)]
        lease_ttl_ms: u64,
        /// Admin token (both proxies).
        #[arg(long, env = "LEASEGATE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Helpers for scripts: status, lease, pause, unpause.
    Ctl {
        /// Admin address (host:port) of the leasegate.
        #[arg(long)]
        admin: String,
        #[arg(long, env = "LEASEGATE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        action: CtlAction,
    },
}

#[derive(Subcommand)]
enum CtlAction {
    /// Print /v1/status.
    Status,
    /// Grant (or, naming another node, revoke) the lease.
    Lease {
        #[arg(long)]
        master_node_id: String,
        #[arg(long)]
        epoch: u64,
        #[arg(long)]
        ttl_ms: u64,
    },
    /// Pause writes (or everything) for a while.
    Pause {
        #[arg(long)]
        timeout_ms: u64,
        #[arg(long, default_value = "write")]
        mode: String,
    },
    /// End the pause.
    Unpause,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Failover {
            from,
            to,
            sync_timeout_ms,
            pause_timeout_ms,
            force_on_timeout,
            lease_ttl_ms,
            token,
        } => {
            let body = serde_json::json!({
                "to": to,
                "sync_timeout_ms": sync_timeout_ms,
                "pause_timeout_ms": pause_timeout_ms,
                "force_on_timeout": force_on_timeout,
                "lease_ttl_ms": lease_ttl_ms,
            });
            admin_call(
                &from,
                "POST",
                "/v1/failover",
                token.as_deref(),
                Some(body),
                print_failover,
            )
        }
        Command::Ctl {
            admin,
            token,
            action,
        } => {
            let (method, path, body) = match action {
                CtlAction::Status => ("GET", "/v1/status", None),
                CtlAction::Lease {
                    master_node_id,
                    epoch,
                    ttl_ms,
                } => (
                    "POST",
                    "/v1/lease",
                    Some(
                        serde_json::json!({"master_node_id": master_node_id, "epoch": epoch, "ttl_ms": ttl_ms}),
                    ),
                ),
                CtlAction::Pause { timeout_ms, mode } => (
                    "POST",
                    "/v1/pause",
                    Some(
                        serde_json::json!({"timeout_ms": timeout_ms, "mode": mode.to_ascii_lowercase()}),
                    ),
                ),
                CtlAction::Unpause => ("POST", "/v1/unpause", Some(serde_json::json!({}))),
            };
            admin_call(&admin, method, path, token.as_deref(), body, |v| {
                println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            })
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                use std::io::Write;
                // A closed pipe (`| head`) is not an error worth a panic.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}: OK", file.display());
                let _ = writeln!(out, "{config:#?}");
                for warning in config.warnings() {
                    let _ = writeln!(out, "warning: {warning}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config: path } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            leasegate::logging::init(&config.log);
            // The main runtime runs the listener, signals, admin API and
            // background tasks; sessions run on `threads` worker threads.
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            let server = Server::new(config, Some(path));
            let result = runtime.block_on(server.run());
            runtime.shutdown_timeout(std::time::Duration::from_millis(100));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "leasegate stopped");
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A single-threaded runtime (the proxy's main runtime, or one for a CLI call).
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            None
        }
    }
}

/// One call to an admin API; prints the answer with `show`. Exit 1 on a
/// non-2xx answer or an unreachable proxy.
fn admin_call(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
    show: impl Fn(&serde_json::Value),
) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let client =
        leasegate::kvrocks::admin_client::AdminClient::new(std::time::Duration::from_secs(30));
    let answer =
        runtime.block_on(client.call(addr, method, path, token, body.map(|b| b.to_string())));
    match answer {
        Ok((status, text)) => {
            let value: serde_json::Value =
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
            show(&value);
            if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                eprintln!("error: {method} {path} answered {status}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints each failover state with its elapsed time, then the stall.
fn print_failover(report: &serde_json::Value) {
    let Some(steps) = report["steps"].as_array() else {
        println!("{report}");
        return;
    };
    for step in steps {
        println!(
            "{:>9.3} ms  {}",
            step["at_ms"].as_f64().unwrap_or(0.0),
            step["state"].as_str().unwrap_or("?")
        );
    }
    if let Some(stall) = report["stall_ms"].as_f64() {
        println!("write stall: {stall:.3} ms");
    }
    if let Some(new_master) = report["new_master"].as_str() {
        println!("new master: {new_master} (epoch {})", report["epoch"]);
    }
    if let Some(error) = report["error"].as_str() {
        println!("failed: {error}");
    }
}
