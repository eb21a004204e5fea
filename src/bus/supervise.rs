//! One task per live broadcast, for services that follow every stream (the
//! LL-HLS packager, the transcoder): started for the broadcasts already
//! live and for each one announced, at most one per broadcast, until
//! shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::{JoinError, JoinSet};

use super::{BroadcastConsumer, Registry};
use crate::shutdown::Shutdown;

impl Registry {
    /// Runs until `shutdown`. `start` is asked once per broadcast and may
    /// decline it (`None`) or give the task to run and a value that is
    /// handed back to `ended` when the task finishes (with the error if it
    /// panicked). At shutdown, broadcasts end, so tasks finish: they get
    /// `drain` to do so (and `ended` is still called), then are aborted.
    pub async fn for_each_broadcast<T, Fut>(
        &self,
        mut shutdown: Shutdown,
        drain: Duration,
        mut start: impl FnMut(BroadcastConsumer) -> Option<(Fut, T)>,
        mut ended: impl FnMut(T, Option<JoinError>),
    ) where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut announcements = self.announcements();
        let mut tasks = JoinSet::new();
        // Task -> (broadcast id, the caller's value).
        let mut running: HashMap<tokio::task::Id, (u64, T)> = HashMap::new();
        let mut spawn = |b: BroadcastConsumer,
                         tasks: &mut JoinSet<()>,
                         running: &mut HashMap<tokio::task::Id, (u64, T)>| {
            let id = b.id();
            if running.values().any(|(running_id, _)| *running_id == id) {
                return;
            }
            if let Some((task, value)) = start(b) {
                let handle = tasks.spawn(task);
                running.insert(handle.id(), (id, value));
            }
        };
        for b in self.list() {
            spawn(b, &mut tasks, &mut running);
        }
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                a = announcements.recv() => match a {
                    Ok(b) => spawn(b, &mut tasks, &mut running),
                    Err(RecvError::Lagged(_)) => {
                        for b in self.list() {
                            spawn(b, &mut tasks, &mut running);
                        }
                    }
                    Err(RecvError::Closed) => break,
                },
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let (task, error) = match done {
                        Ok((task, ())) => (task, None),
                        Err(e) => (e.id(), Some(e)),
                    };
                    if let Some((_, value)) = running.remove(&task) {
                        ended(value, error);
                    }
                }
            }
        }
        // Tasks finishing while draining are reported too (a stream that
        // ends because the server stops has ended all the same).
        let _ = tokio::time::timeout(drain, async {
            while let Some(done) = tasks.join_next_with_id().await {
                let (task, error) = match done {
                    Ok((task, ())) => (task, None),
                    Err(e) => (e.id(), Some(e)),
                };
                if let Some((_, value)) = running.remove(&task) {
                    ended(value, error);
                }
            }
        })
        .await;
        tasks.shutdown().await;
    }
}
