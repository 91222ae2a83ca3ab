//! The queue in front of a dispatcher task: the group committer's ([`crate::group`]) and the
//! loader's ([`crate::load`]). The dispatcher is started by the first job and started again by
//! the next job after it died (a panic, its runtime shut down), so a handle outlives its tasks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::mpsc;

/// The sending side of a dispatcher's queue.
pub(crate) struct Queue<J> {
    sender: Mutex<Option<mpsc::UnboundedSender<J>>>,
}

impl<J> Default for Queue<J> {
    fn default() -> Self {
        Queue {
            sender: Mutex::new(None),
        }
    }
}

impl<J: Send + 'static> Queue<J> {
    /// Queues `job`, counting it in `queued` (the dispatcher counts it out when it takes it).
    /// With no live dispatcher, `start` is given a new queue to run one on (`queued` is reset:
    /// the jobs of a dead one were answered by their dropped channels), after `restarted` if
    /// one had run before. Gives the job back if two dispatchers died in a row.
    pub(crate) fn send(
        &self,
        mut job: J,
        queued: &AtomicU64,
        start: impl Fn(mpsc::UnboundedReceiver<J>),
        restarted: impl Fn(),
    ) -> Result<(), J> {
        for _ in 0..2 {
            let sender = {
                let mut slot = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
                match slot.as_ref().filter(|sender| !sender.is_closed()) {
                    Some(sender) => sender.clone(),
                    None => {
                        if slot.is_some() {
                            restarted();
                        }
                        queued.store(0, Ordering::Relaxed);
                        let (sender, jobs) = mpsc::unbounded_channel();
                        start(jobs);
                        *slot = Some(sender.clone());
                        sender
                    }
                }
            };
            queued.fetch_add(1, Ordering::Relaxed);
            match sender.send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => {
                    // The dispatcher died between the check and the send: start another.
                    queued.fetch_sub(1, Ordering::Relaxed);
                    job = back;
                }
            }
        }
        Err(job)
    }
}
