//! The `leasegate` command line: `run`, `check-config`, `failover`, `ctl`.
//!
//! `failover` and `ctl` speak the admin API through
//! [`AdminClient`] with the wire types of [`leasegate::kvrocks::admin_api`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

use leasegate::config::Config;
use leasegate::kvrocks::admin_api::{
    ErrorBody, FailoverReport, FailoverRequest, FailoverState, LeaseRequest, PauseMode,
    PauseRequest, DEFAULT_LEASE_TTL_MS, DEFAULT_PAUSE_TIMEOUT_MS, DEFAULT_SYNC_TIMEOUT_MS,
    FAILOVER_FAILED_STATUS,
};
use leasegate::kvrocks::admin_client::{AdminClient, AdminError};
use leasegate::kvrocks::admin_text;
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
        /// Take the place of the leasegate running with this config: its
        /// listeners, lease and sessions (an upgrade; SIGUSR2 to the
        /// running one starts this). Fails, leaving it serving, if there
        /// is none or it refuses.
        #[arg(long)]
        take_over: bool,
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
        #[arg(long, default_value_t = DEFAULT_SYNC_TIMEOUT_MS)]
        sync_timeout_ms: u64,
        #[arg(long, default_value_t = DEFAULT_PAUSE_TIMEOUT_MS)]
        pause_timeout_ms: u64,
        /// Switch even when the replica has not caught up within the sync timeout.
        #[arg(long)]
        force_on_timeout: bool,
        /// Lease granted to the new master (the controller renews it afterwards).
        #[arg(long, default_value_t = DEFAULT_LEASE_TTL_MS)]
        lease_ttl_ms: u64,
        /// Pause at once instead of at the moment a Kvrocks replica's
        /// promotion can follow (docs/failover-timing.md).
        #[arg(long)]
        no_promotion_timing: bool,
        /// In cluster mode, time the pause too (docs/failover-timing.md).
        #[arg(long)]
        cluster_timing: bool,
        /// Admin token of the current master's leasegate (and of the
        /// target's, unless `--target-token` gives that one).
        #[arg(long, env = "LEASEGATE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Admin token of the target's leasegate, where it differs: the
        /// failover grants the new master its lease with it.
        #[arg(long, env = "LEASEGATE_TARGET_TOKEN", hide_env_values = true)]
        target_token: Option<String>,
    },
    /// Look at or steer a running leasegate through its admin API.
    ///
    /// Exit codes: 0 done; 1 the call failed (leasegate unreachable, or it
    /// refused: the error is printed); 2 bad usage; 3 (`probe`) the node
    /// is unreachable.
    Ctl {
        /// Admin address (host:port) of the leasegate.
        #[arg(long, default_value = "127.0.0.1:9180")]
        admin: String,
        #[arg(long, env = "LEASEGATE_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the API's JSON answer instead of the summary (for scripts).
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: CtlAction,
    },
}

#[derive(Subcommand)]
enum CtlAction {
    /// The lease, the node, the pause, the failover state (/v1/status).
    Status,
    /// The node probe's record (/v1/probe); exit 3 if the node is unreachable.
    Probe,
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
        /// `write` or `all` (any case).
        #[arg(long, default_value = "write")]
        mode: PauseMode,
    },
    /// End the pause.
    Unpause,
    /// Re-read the config file, as SIGHUP does: prints what was applied and
    /// what needs a restart; a file it cannot use changes nothing (exit 1).
    Reload,
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
            no_promotion_timing,
            cluster_timing,
            token,
            target_token,
        } => {
            let request = FailoverRequest {
                to,
                sync_timeout_ms,
                pause_timeout_ms,
                force_on_timeout,
                lease_ttl_ms,
                target_token,
                promotion_timing: !no_promotion_timing,
                cluster_timing,
            };
            let answer = admin_call(|client| async move {
                client.failover(&from, token.as_deref(), &request).await
            });
            finish("POST", "/v1/failover", answer, false, |report| {
                print_failover(report);
                // A failover that ran and failed answers its report with 409.
                if report.result == FailoverState::Success {
                    Ok(())
                } else {
                    Err(FAILOVER_FAILED_STATUS)
                }
            })
        }
        Command::Ctl {
            admin,
            token,
            json,
            action,
        } => {
            let token = token.as_deref();
            let admin = admin.as_str();
            match action {
                CtlAction::Status => finish(
                    "GET",
                    "/v1/status",
                    admin_call(|client| async move { client.status(admin).await }),
                    true,
                    |v| show(v, json, admin_text::status),
                ),
                CtlAction::Probe => {
                    let answer = admin_call(|client| async move { client.probe(admin).await });
                    let mut unreachable = false;
                    let code = finish("GET", "/v1/probe", answer, true, |p| {
                        unreachable = p.enabled && !p.reachable;
                        show(p, json, admin_text::probe)
                    });
                    if unreachable {
                        ExitCode::from(3)
                    } else {
                        code
                    }
                }
                CtlAction::Lease {
                    master_node_id,
                    epoch,
                    ttl_ms,
                } => {
                    let request = LeaseRequest {
                        master_node_id,
                        epoch,
                        ttl_ms,
                        nonce: None,
                    };
                    finish(
                        "POST",
                        "/v1/lease",
                        admin_call(|client| async move {
                            client.grant_lease(admin, token, &request).await
                        }),
                        true,
                        |v| show(v, json, admin_text::lease_response),
                    )
                }
                CtlAction::Pause { timeout_ms, mode } => {
                    let request = PauseRequest { timeout_ms, mode };
                    finish(
                        "POST",
                        "/v1/pause",
                        admin_call(
                            |client| async move { client.pause(admin, token, &request).await },
                        ),
                        true,
                        |v| show(v, json, admin_text::pause_response),
                    )
                }
                CtlAction::Unpause => finish(
                    "POST",
                    "/v1/unpause",
                    admin_call(|client| async move { client.unpause(admin, token).await }),
                    true,
                    |v| show(v, json, admin_text::pause_response),
                ),
                CtlAction::Reload => finish(
                    "POST",
                    "/v1/reload",
                    admin_call(|client| async move { client.reload(admin, token).await }),
                    true,
                    |v| show(v, json, admin_text::reload),
                ),
            }
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                use std::io::Write;
                // A closed pipe (`| head`) is not an error worth a panic.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}: OK", file.display());
                let _ = writeln!(out, "{:#?}", config.redacted());
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
        Command::Run {
            config: path,
            take_over,
        } => {
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
            let server = if take_over {
                server.taking_over()
            } else {
                server
            };
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

/// One call to an admin API, on a runtime of its own. `None` when the
/// runtime cannot start (already reported).
fn admin_call<T, F>(call: impl FnOnce(AdminClient) -> F) -> Option<Result<T, AdminError>>
where
    F: std::future::Future<Output = Result<T, AdminError>>,
{
    let runtime = runtime()?;
    let client = AdminClient::new(
        std::time::Duration::from_secs(30),
        admin_ca()?,
        leasegate::kvrocks::admin_client::CLI_CA_MISSING,
    );
    Some(runtime.block_on(call(client)))
}

/// The CAs `https://` admin APIs are trusted with: the PEM file named by
/// `LEASEGATE_ADMIN_CA` (unset: none, and only `http://` admin APIs can be
/// called). `None` when the file cannot be used (already reported).
fn admin_ca() -> Option<Option<std::sync::Arc<rustls::ClientConfig>>> {
    let Some(path) = std::env::var_os("LEASEGATE_ADMIN_CA") else {
        return Some(None);
    };
    let keys = leasegate::proxy::tls::TlsKeys {
        cert_file: "LEASEGATE_ADMIN_CA",
        key_file: "LEASEGATE_ADMIN_CA",
        ca_file: "LEASEGATE_ADMIN_CA",
    };
    match leasegate::proxy::tls::client_config(std::path::Path::new(&path), None, keys) {
        Ok(config) => Some(Some(config)),
        Err((key, reason)) => {
            eprintln!("error: {key}: {reason}");
            None
        }
    }
}

/// Prints an admin API answer with `show` (which may still refuse it with
/// the HTTP status it came with), or the error answer. Exit 1 on a non-2xx
/// answer or an unreachable proxy.
fn finish<T>(
    method: &str,
    path: &str,
    answer: Option<Result<T, AdminError>>,
    pretty: bool,
    show: impl FnOnce(&T) -> Result<(), u16>,
) -> ExitCode {
    let Some(answer) = answer else {
        return ExitCode::FAILURE;
    };
    let status = match answer {
        Ok(value) => match show(&value) {
            Ok(()) => return ExitCode::SUCCESS,
            Err(status) => status,
        },
        Err(AdminError::Status { status, body, .. }) => {
            print_error_body(&body, pretty);
            status
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let hint = if status == 401 {
        " (give the admin token: --token or LEASEGATE_ADMIN_TOKEN)"
    } else {
        ""
    };
    eprintln!("error: {method} {path} answered {status}{hint}");
    ExitCode::FAILURE
}

/// Prints an answer as a summary for people, or with `json` as the API's
/// JSON.
fn show<T: Serialize>(value: &T, json: bool, text: impl FnOnce(&T) -> String) -> Result<(), u16> {
    if json {
        return print_pretty(value);
    }
    println!("{}", text(value));
    Ok(())
}

/// Prints an answer as indented JSON (object keys sorted, as the server
/// sends them).
fn print_pretty(value: &impl Serialize) -> Result<(), u16> {
    let text = serde_json::to_value(value)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_default();
    println!("{text}");
    Ok(())
}

/// Prints an error answer: a leasegate's `{"error": "..."}`, or whatever
/// else came back, as a JSON string.
fn print_error_body(body: &str, pretty: bool) {
    let text = match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) if pretty => serde_json::to_string_pretty(&e),
        Ok(e) => serde_json::to_string(&e),
        Err(_) => serde_json::to_string(body),
    };
    println!("{}", text.unwrap_or_default());
}

/// Prints each failover state with its elapsed time, then the stall.
fn print_failover(report: &FailoverReport) {
    for step in &report.steps {
        println!("{:>9.3} ms  {}", step.at_ms, step.state.as_str());
    }
    if let Some(stall) = report.stall_ms {
        println!("write stall: {stall:.3} ms");
    }
    if let Some(promotion) = report.promotion_ms {
        println!("promotion: {promotion:.3} ms");
    }
    if let Some(timing) = &report.timing {
        println!(
            "promotion timing: {} (waited {:.1} ms before the pause): {}",
            timing.outcome.as_str(),
            timing.wait_ms,
            timing.note
        );
    }
    if let Some(late) = report.lease_late_ms {
        println!("the new master's lease came {late:.1} ms after the pause ended (pause_timeout_ms): writes sent meanwhile waited there or were refused");
    }
    if let Some(new_master) = &report.new_master {
        let epoch = report.epoch.map_or("null".to_string(), |e| e.to_string());
        println!("new master: {new_master} (epoch {epoch})");
    }
    if let Some(error) = &report.error {
        println!("failed: {error}");
    }
}
