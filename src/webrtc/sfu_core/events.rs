//! A viewer's notifications for its signalling session: a rendition
//! change, its close. They are rare (a few in a viewer's life), so the
//! queue is one small allocation that grows only when one is sent. A tokio
//! `mpsc` channel cost 1.57 kB a viewer (its block of 32 slots and its
//! cache-padded halves), heaptrack at 400 viewers; this is about 100 bytes,
//! and about 130 more once an event has been queued.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::ViewerEvent;

/// Events queued at most; a signalling session that far behind misses
/// the newest (see `notify`).
pub const VIEWER_EVENTS: usize = 16;

struct Shared {
    queue: Mutex<VecDeque<ViewerEvent>>,
    /// Senders alive; at 0 the receiver sees the end once the queue is
    /// empty.
    senders: AtomicUsize,
    notify: Notify,
}

/// The engine's end: cloned into each viewer the session asks for.
pub struct EventSender(Arc<Shared>);

/// The signalling session's end.
pub struct EventReceiver(Arc<Shared>);

/// A new queue of viewer events.
pub fn channel() -> (EventSender, EventReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        senders: AtomicUsize::new(1),
        notify: Notify::new(),
    });
    (EventSender(shared.clone()), EventReceiver(shared))
}

impl EventSender {
    /// Queues `e` unless [`VIEWER_EVENTS`] are waiting already; false if
    /// it was not queued.
    pub fn try_send(&self, e: ViewerEvent) -> bool {
        {
            let mut q = self.0.queue.lock().expect("events lock");
            if q.len() >= VIEWER_EVENTS {
                return false;
            }
            q.push_back(e);
        }
        // A permit is kept if the receiver is not waiting yet.
        self.0.notify.notify_one();
        true
    }
}

impl Clone for EventSender {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        EventSender(self.0.clone())
    }
}

impl Drop for EventSender {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.notify.notify_one();
        }
    }
}

impl EventReceiver {
    /// The next event, or `None` once every sender is gone and nothing is
    /// left queued.
    pub async fn recv(&mut self) -> Option<ViewerEvent> {
        loop {
            if let Some(e) = self.try_recv() {
                return Some(e);
            }
            if self.0.senders.load(Ordering::Acquire) == 0 {
                // One last look: a sender may have queued just before it
                // went.
                return self.try_recv();
            }
            self.0.notify.notified().await;
        }
    }

    /// The next event queued, if any.
    pub fn try_recv(&mut self) -> Option<ViewerEvent> {
        self.0.queue.lock().expect("events lock").pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webrtc::sfu_core::CloseReason;

    fn changed(name: &str) -> ViewerEvent {
        ViewerEvent::RenditionChanged {
            name: name.into(),
            auto: true,
        }
    }

    #[tokio::test]
    async fn events_arrive_in_order_and_end_when_the_senders_go() {
        let (tx, mut rx) = channel();
        let other = tx.clone();
        assert!(tx.try_send(changed("720p")));
        assert!(other.try_send(ViewerEvent::Closed(CloseReason::IceTimeout)));
        assert_eq!(rx.recv().await, Some(changed("720p")));
        assert_eq!(
            rx.recv().await,
            Some(ViewerEvent::Closed(CloseReason::IceTimeout))
        );
        assert_eq!(rx.try_recv(), None);
        drop(tx);
        // One sender left: recv waits for it.
        let waiting = tokio::spawn(async move { (rx.recv().await, rx) });
        tokio::task::yield_now().await;
        assert!(other.try_send(changed("360p")));
        let (got, mut rx) = waiting.await.unwrap();
        assert_eq!(got, Some(changed("360p")));
        // Queued before the last sender went: still delivered, then the end.
        assert!(other.try_send(changed("480p")));
        drop(other);
        assert_eq!(rx.recv().await, Some(changed("480p")));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_receiver_far_behind_misses_the_newest() {
        let (tx, mut rx) = channel();
        for i in 0..VIEWER_EVENTS {
            assert!(tx.try_send(changed(&i.to_string())));
        }
        assert!(!tx.try_send(changed("late")));
        assert_eq!(rx.recv().await, Some(changed("0")));
        assert!(tx.try_send(changed("room again")));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_when_the_last_sender_goes() {
        let (tx, mut rx) = channel();
        let waiting = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiting.await.unwrap(), None);
    }
}
