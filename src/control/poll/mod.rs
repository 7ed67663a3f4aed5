//! Pull renewal from a stock kvrocks-controller.
//!
//! A controller that knows nothing about leases still knows who the master of
//! each shard is. Every `controller.poll_interval_ms` leasegate asks it for the
//! cluster (`GET {url}/api/v1/namespaces/{ns}/clusters/{cluster}`) and:
//!
//! * this node is `master` of its shard → the lease is renewed for
//!   `controller.ttl_ms`, anchored at the instant the request was *sent* (so a
//!   slow answer only shortens the lease);
//! * this node is listed with another role, or not at all → the lease is
//!   revoked at once;
//! * the cluster version is below the highest this poller has seen → the
//!   answer is stale (an old leader, a lagging replica of etcd) and ignored;
//! * the controller is unreachable or answers an error → nothing happens: the
//!   lease simply runs out, which is the point;
//! * the controller knows no raft leader, or (`controller.url` listing every
//!   controller of its group) no majority of them names one → as if it
//!   were unreachable ([`crate::kvrocks::controller_group`]).
//!
//! Non-leader controllers answer `307` to the leader; up to [`MAX_REDIRECTS`](crate::kvrocks::controller::MAX_REDIRECTS)
//! hops are followed. Safe only if `ttl_ms` + margin stays below the
//! controller's failure detection time; [`crate::config::Config::warnings`]
//! says so at start-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use crate::control::lasting::Lasting;
use crate::control::{fence, step_down_fence, switch, ControlContext};
use crate::kvrocks::controller::parse_cluster;
use crate::kvrocks::controller::{cluster_urls, http_client};
use crate::kvrocks::controller_group::{fetch_led_noting, Heard};

mod hold;
mod metrics;
mod poller;

pub use metrics::{OutcomeLabels, PollMetrics};
use poller::{Poller, FENCED_WARN_AFTER};

/// Polls the controller until `ctx.shutdown` is cancelled. Does nothing
/// when `controller.url` is unset. `controller.poll_interval_ms`, `.ttl_ms`
/// and `.timeout_ms` are read from the running config, again after every
/// reload; the cluster polled (`url`, `namespace`, `cluster`) is fixed at
/// start, since the versions this poller remembers belong to it.
pub async fn poll(ctx: Arc<ControlContext>) {
    let config = ctx.config.load_full();
    let Some(controllers) = &config.controller.url else {
        return;
    };
    let c = &config.controller;
    let urls = cluster_urls(controllers.as_slice(), &c.namespace, &c.cluster);
    let metrics = &ctx.metrics.poll;
    let mut timeout = c.timeout.max(Duration::from_millis(1));
    let mut tls = ctx.controller_tls.load_full();
    let mut client = http_client(timeout, tls.clone());
    info!(url = %urls.join(", "), interval_ms = c.poll_interval.as_millis() as u64, ttl_ms = c.ttl_ms, "polling the controller for the master lease");

    ctx.role.poller_releases(c.switch_timeout);
    // The controller's own push promoting this node waits until the old
    // master is fenced (its push may come before the old master's poll).
    ctx.role
        .promotion_fence
        .enable(fence::bound(&config), false);
    tokio::spawn(fence::serve(Arc::clone(&ctx)));
    // And the push demoting this node waits until the new master has its
    // writes (the push may come before the new master's).
    ctx.role
        .step_down_fence
        .enable(step_down_fence::BOUND, false);
    tokio::spawn(step_down_fence::serve(Arc::clone(&ctx)));
    let mut poller = Poller {
        ctx: &ctx,
        metrics,
        highest: None,
        failures: 0,
        revocations_seen: ctx.gate.lease().revocations(),
        fenced_at: None,
        other_master: None,
        pending_logged: None,
        fenced: Lasting::new(FENCED_WARN_AFTER),
        new_master_wait: None,
    };
    let ticker_for = |interval: Duration| {
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    };
    let mut interval = c.poll_interval;
    let mut ticker = ticker_for(interval);
    // Clients wait for the first judged poll this long at most
    // (`server::services`); unjudged polls are asked again soon only
    // within it, not for as long as the node's id stays unknown.
    let admitting_until = Instant::now() + c.timeout + Duration::from_millis(50);
    let mut reloaded = ctx.reloaded.subscribe();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            // A topology promoting this node passed: ask now.
            _ = ctx.role.promoted() => {}
            // Verification saw the controller switch the shard: follow it
            // now (writes refused meanwhile wait for it).
            _ = ctx.role.switch.seen() => {}
            // A topology demoting this node passed, its writes held.
            _ = ctx.role.stepped_down() => {
                switch::release_to_new_master(&ctx).await;
                continue;
            }
            r = reloaded.changed() => {
                if r.is_err() {
                    return;
                }
                let reloaded = ctx.config.load_full();
                ctx.role
                    .promotion_fence
                    .enable(fence::bound(&reloaded), false);
                let now = reloaded.controller.poll_interval;
                if now != interval {
                    // A new ticker's first tick is at once: the next poll
                    // comes now, then at the new interval.
                    interval = now;
                    ticker = ticker_for(interval);
                }
                continue;
            }
            _ = ctx.shutdown.cancelled() => return,
        }
        let wanted = ctx
            .config
            .load()
            .controller
            .timeout
            .max(Duration::from_millis(1));
        let now_tls = ctx.controller_tls.load_full();
        if wanted != timeout || !crate::kvrocks::connector::same_settings(&now_tls, &tls) {
            // A reload changed the bound or the CAs (read again).
            (timeout, tls) = (wanted, now_tls);
            client = http_client(timeout, tls.clone());
        }
        let lease = ctx.gate.lease();
        let sent = lease.now();
        let started = Instant::now();
        let mut heard = |controller: &str, answer: Heard| metrics.heard(controller, answer);
        let answer = tokio::select! {
            a = fetch_led_noting(&client, &urls, timeout, &mut heard) => a.and_then(|body| parse_cluster(&body)),
            _ = ctx.shutdown.cancelled() => return,
        };
        metrics.duration.observe(started.elapsed().as_secs_f64());
        let follow = tokio::select! {
            f = poller.apply(answer, sent) => f,
            _ = ctx.shutdown.cancelled() => return,
        };
        // A switch verification saw before this poll was sent is followed
        // now (a step-down), or was none: the writes waiting go on.
        ctx.role.switch.followed(started);
        if lease.node_id().is_some() {
            ctx.role.first_poll.set();
        } else if !ctx.role.first_poll.happened() && Instant::now() < admitting_until {
            // Not judged: the probe has not learned this node's id yet
            // (CLUSTERX MYID, moments after start). Clients still wait
            // for the controller's word: ask again soon, not a tick later.
            // (Taken as the first word, a restarted leasegate answered
            // the cold start's `-READONLY master lease expired` to writes
            // for one poll interval: walkthrough 11.)
            tokio::time::sleep(UNJUDGED_RETRY).await;
            ticker.reset_immediately();
            continue;
        }
        if follow {
            // A switch was followed: look again at once rather than a
            // tick later (the other side may have moved meanwhile).
            ticker.reset_immediately();
        }
    }
}

/// How soon a first poll that could not be judged (the node's id not yet
/// known) is asked again.
const UNJUDGED_RETRY: Duration = Duration::from_millis(10);
