//! Session workers: one single-threaded runtime per thread.
//!
//! A client connection is handed to one worker and lives there: its two
//! sockets are registered with that thread's poller and its task never
//! migrates, like HAProxy's threads and unlike a work-stealing pool. On the
//! measured pass-through path this saves the cross-thread wake-ups and task
//! migrations a shared multi-threaded runtime adds to every request. Each
//! worker also runs a verification driver (see
//! [`crate::guard::verify`]). The main runtime keeps the listener, signals,
//! the admin API and the background tasks.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A fixed set of session threads.
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` worker threads (at least one).
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let mut workers = Workers {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
            next: AtomicUsize::new(0),
        };
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            workers.stops.push(stop);
            workers.threads.push(
                std::thread::Builder::new()
                    .name(format!("leasegate-worker-{i}"))
                    .spawn(move || {
                        runtime.block_on(async {
                            let _ = stopped.await;
                        });
                        // Dropping the runtime cancels what is left.
                    })?,
            );
        }
        Ok(workers)
    }

    /// The worker the next connection goes to (round robin).
    pub fn pick(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// Runs `future` on the next worker.
    pub fn spawn<F>(&self, tracker: &tokio_util::task::TaskTracker, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tracker.spawn_on(future, self.pick());
    }

    /// Runs `future` on worker `i` (modulo their number), untracked: for
    /// what lives as long as the workers themselves.
    pub fn spawn_on<F>(&self, i: usize, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handles[i % self.handles.len()].spawn(future);
    }

    /// Stops every worker, cancelling the sessions still on them.
    pub fn stop(mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}
