//! Polling a future that waits for a rare signal only once that signal's waker fired.
//!
//! `select!` polls every branch each time its task wakes. A connection's task wakes
//! several times per request, and the branches that wait for rare events (shutdown, a
//! drain's cut, a lost pin, parking) were polled each time; a tokio `Notified` takes a
//! lock on every such poll. Wrapped in [`WhenWoken`], a branch is polled again only after
//! its own waker fired.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

/// `inner`, polled on its first poll and then only after it woke its task.
pub struct WhenWoken<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// Hands `flag` to `inner` as its waker; made once.
    waker: Waker,
}

struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> WhenWoken<F> {
    pub fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        WhenWoken {
            inner: Box::pin(inner),
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Registered before the flag is read: a wake after the read reaches this task.
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    /// Counts its polls; ready once `notify` fired.
    async fn counted(notify: Arc<Notify>, polls: Arc<AtomicUsize>) {
        let notified = notify.notified();
        tokio::pin!(notified);
        std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            notified.as_mut().poll(cx)
        })
        .await
    }

    #[tokio::test]
    async fn a_branch_is_polled_again_only_after_its_own_wake_and_then_completes() {
        let (notify, polls) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
        let mut gated = WhenWoken::new(counted(notify.clone(), polls.clone()));
        let busy = Arc::new(Notify::new());
        // The task wakes 50 times for another branch: the gated one is not polled again.
        for _ in 0..50 {
            busy.notify_one();
            tokio::select! {
                _ = &mut gated => panic!("completed without its signal"),
                _ = busy.notified() => {}
            }
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        notify.notify_one();
        tokio::time::timeout(Duration::from_secs(5), gated)
            .await
            .expect("the signal reached the gated branch");
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
