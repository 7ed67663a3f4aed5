//! Unit tests of [`super`].

use super::*;

/// The poller's hold ends only itself: a pause set after it stays.
#[tokio::test(flavor = "current_thread")]
async fn an_owner_ends_only_its_own_pause() {
    let p = Arc::new(Pause::new(2, 100));
    let mine = p.pause(Duration::from_secs(60), PauseMode::Write);
    let theirs = p.pause(Duration::from_secs(60), PauseMode::Write);
    assert!(!p.end(Some(mine)), "a later pause is not mine to end");
    assert!(p.holds(true), "the later pause stays");
    assert!(p.end(Some(theirs)));
    assert!(!p.holds(true));
    // By owner: the same, whoever remembers what.
    p.pause_as(
        Duration::from_secs(60),
        PauseMode::Write,
        Some(PauseOwner::PollTakeOver),
    );
    assert!(!p.end_owned(PauseOwner::Sentinel), "not the Sentinel's");
    p.pause(Duration::from_secs(60), PauseMode::Write);
    assert!(
        !p.end_owned(PauseOwner::PollTakeOver),
        "the poller's was replaced"
    );
    assert!(p.holds(true));
    p.unpause();
    p.pause_as(
        Duration::from_secs(60),
        PauseMode::Write,
        Some(PauseOwner::PollTakeOver),
    );
    assert_eq!(p.owner(), Some(PauseOwner::PollTakeOver));
    assert!(p.end_owned(PauseOwner::PollTakeOver));
    assert!(!p.holds(true) && p.owner().is_none());
}

/// An upgrade's freeze holds every request whatever comes meanwhile: an
/// unpause (the controller's `CLIENT UNPAUSE`) or a shorter pause
/// changes only the pause set under it, which is what a successor
/// takes, and what holds again if the take-over fails.
#[tokio::test(flavor = "current_thread")]
async fn a_freeze_is_ended_by_nothing_but_its_thaw() {
    let p = Arc::new(Pause::new(8, 1000));
    p.pause_as(
        Duration::from_secs(30),
        PauseMode::Write,
        Some(PauseOwner::PollTakeOver),
    );
    p.freeze();
    assert!(p.holds(false), "reads are held too");
    let held = p.hold(10).expect("room");
    p.unpause();
    assert!(
        p.holds(false) && p.holds(true),
        "an unpause does not end it"
    );
    assert_eq!(p.remaining(), None, "but the pause set is gone");
    p.pause(Duration::from_millis(20), PauseMode::Write);
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(p.holds(false), "nor does a pause's timeout");
    p.pause_as(
        Duration::from_secs(30),
        PauseMode::Write,
        Some(PauseOwner::PollTakeOver),
    );
    let (mode, left) = p.remaining().expect("a pause set");
    assert_eq!(mode, PauseMode::Write);
    assert!(left > Duration::from_secs(29));
    assert_eq!(p.owner(), Some(PauseOwner::PollTakeOver));
    drop(held);
    p.thaw();
    assert!(
        p.holds(true) && !p.holds(false),
        "the pause set holds writes"
    );
    assert!(p.end_owned(PauseOwner::PollTakeOver));
    assert!(!p.is_paused());
    // A read held by the freeze over a write pause is asked about
    // again at the thaw (the write pause lets it through).
    p.pause(Duration::from_secs(30), PauseMode::Write);
    p.freeze();
    held_until_thaw(&p).await;
    assert!(p.holds(true) && !p.holds(false));
    p.unpause();
    // A hold may be set under the freeze (for the successor), where a
    // failover's would not be.
    assert!(p.may_hold(false) && !p.may_hold(true));
    p.freeze();
    assert!(p.may_hold(true), "the upgrade's slot: set under the freeze");
    p.pause(Duration::from_secs(30), PauseMode::Write);
    assert!(!p.may_hold(true) && !p.may_hold(false), "one is set");
    p.unpause();
    p.thaw();
    // A request held under a freeze over no pause is released by the
    // thaw (the generation stays: owners still end their own).
    p.freeze();
    held_until_thaw(&p).await;
    assert!(!p.is_paused());
}

/// A request held now (under a freeze) is released by the thaw.
async fn held_until_thaw(p: &Arc<Pause>) {
    let held = p.hold(10).expect("room");
    let waiter = {
        let p = Arc::clone(p);
        tokio::spawn(async move {
            p.wait(&held).await;
            drop(held);
        })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "held under the freeze");
    p.thaw();
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("the thaw releases it")
        .expect("the waiter");
}

/// A `CLIENT UNPAUSE` waiting for a demoting topology's answer ends
/// the pause it came for, not a new one set while it waits (which
/// would otherwise end at most a second early, unasked).
#[tokio::test(flavor = "current_thread")]
async fn a_deferred_unpause_leaves_a_later_pause_alone() {
    let p = Arc::new(Pause::new(2, 100));
    p.pause(Duration::from_secs(60), PauseMode::Write);
    p.step_down_sent();
    assert!(p.unpause_after_step_down(Duration::from_secs(1)));
    assert!(p.holds(true), "the unpause waits");
    p.pause(Duration::from_secs(60), PauseMode::Write);
    p.step_down_answered();
    assert!(p.holds(true), "the later pause stays");
    // And one that waited for its own pause ends it.
    p.step_down_sent();
    assert!(p.unpause_after_step_down(Duration::from_secs(1)));
    p.step_down_answered();
    assert!(!p.holds(true));
    // Not paused: nothing to wait for.
    p.step_down_sent();
    assert!(!p.unpause_after_step_down(Duration::from_secs(1)));
}

#[tokio::test(flavor = "current_thread")]
async fn holds_until_unpaused_and_bounds_the_buffer() {
    let p = Arc::new(Pause::new(2, 100));
    assert!(!p.holds(true));
    p.pause(Duration::from_secs(60), PauseMode::Write);
    assert!(p.holds(true) && !p.holds(false), "reads pass a WRITE pause");
    let a = p.hold(10).expect("room");
    let _b = p.hold(10).expect("room");
    assert!(p.hold(10).is_none(), "request bound");
    assert_eq!(p.status().held_requests, 2);
    let waiter = {
        let p = Arc::clone(&p);
        tokio::spawn(async move {
            p.wait(&a).await;
            drop(a);
        })
    };
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    p.unpause();
    waiter.await.expect("released");
    assert_eq!(p.status().held_requests, 1);
    p.pause(Duration::from_secs(60), PauseMode::All);
    assert!(p.hold(200).is_none(), "byte bound");
    assert!(p.holds(false), "ALL holds reads");
    p.set_bounds(10, 1000);
    assert!(p.hold(200).is_some(), "new bounds apply to new holds");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_pause_ends_at_its_timeout() {
    let p = Arc::new(Pause::new(10, 1000));
    p.pause(Duration::from_millis(500), PauseMode::Write);
    let h = p.hold(1).expect("room");
    tokio::time::timeout(Duration::from_secs(5), p.wait(&h))
        .await
        .expect("ended by its timeout");
    assert!(!p.is_paused());
}

/// A pause's timer ends with the pause: unpaused or replaced, its task is
/// gone (it slept out its timeout: an audit saw 180 MB held after 400,000
/// long pauses, each unpaused at once). A thaw (no change of pause) leaves
/// the timer to end its pause.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_pause_timer_ends_with_its_pause() {
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let p = Arc::new(Pause::new(10, 1000));
    let before = tasks();
    for _ in 0..100 {
        p.pause(Duration::from_secs(3600), PauseMode::Write);
        p.unpause();
    }
    for _ in 0..100 {
        p.pause(Duration::from_secs(3600), PauseMode::Write);
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(tasks(), before + 1, "only the last pause's timer is left");
    p.freeze();
    p.thaw();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(tasks(), before + 1, "a thaw leaves it");
    tokio::time::sleep(Duration::from_secs(3601)).await;
    assert!(!p.is_paused(), "ended by its timeout");
    assert_eq!(tasks(), before);
}
