//! Deadlines on a client's HTTP/1 connection that hyper does not offer in the form a load
//! balancer needs: the request line and headers must arrive within `request_header`
//! (else `408 Request Timeout` and close), and a keep-alive connection with no request
//! for `client_idle` is closed quietly.
//!
//! The wrapper sits between the socket and hyper. It knows whether a request is in
//! progress from [`RequestPhase`] guards, which the request handler holds from the moment
//! hyper hands over a request until its response body is done.
//!
//! It also asks for an idle keep-alive connection to be parked: after [`PARK_AFTER`]
//! without a byte of a new request it signals [`ConnPhase::parked`], the listener ends
//! hyper's connection (freeing its buffers) and waits for the socket to become readable
//! with nothing but the socket held.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Sleep;

use crate::sync::lock;

/// How long a keep-alive connection waits for its next request before it is parked.
/// Long enough that a busy connection keeps its buffers from one request to the next.
pub const PARK_AFTER: Duration = Duration::from_millis(200);

const TIMEOUT_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n\
Content-Length: 24\r\nConnection: close\r\n\r\nrequest header timed out";

/// Shared between a connection's IO wrapper and its request handler.
pub struct ConnPhase {
    start: Instant,
    in_request: AtomicBool,
    /// Micros after `start` of the first byte of the request now being received, +1
    /// (0 = none yet).
    first_byte_us: AtomicU64,
    requests: AtomicU64,
    /// Signalled once an idle keep-alive connection has waited [`PARK_AFTER`].
    pub parked: Notify,
    /// hyper's read, when it last found nothing during a request, and its task: woken when
    /// the request ends elsewhere, so that the idle deadlines start then rather than at
    /// the client's next byte (within the task, writing the response arms them).
    reader: Mutex<Option<(Waker, Option<tokio::task::Id>)>>,
}

impl ConnPhase {
    pub fn new() -> Arc<Self> {
        Arc::new(ConnPhase {
            start: Instant::now(),
            in_request: AtomicBool::new(false),
            first_byte_us: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            parked: Notify::new(),
            reader: Mutex::new(None),
        })
    }

    /// Requests begun on the connection so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn in_request(&self) -> bool {
        self.in_request.load(Ordering::Acquire)
    }

    /// Marks a request as in progress until the returned guard drops. Returns when the
    /// request's first byte arrived (the connection start for the first request).
    pub fn begin_request(self: &Arc<Self>) -> (RequestPhase, Instant) {
        self.in_request.store(true, Ordering::Release);
        let first = self.first_byte_us.swap(0, Ordering::AcqRel);
        let first_byte_at = match first {
            0 => self.start,
            us => self.start + Duration::from_micros(us - 1),
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        (RequestPhase(Some(self.clone())), first_byte_at)
    }

    fn mark_first_byte(&self, at: Instant) {
        let us = at.saturating_duration_since(self.start).as_micros() as u64 + 1;
        let _ = self
            .first_byte_us
            .compare_exchange(0, us, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// Held while a request is in progress on a connection.
pub struct RequestPhase(Option<Arc<ConnPhase>>);

impl RequestPhase {
    /// For responses on connections without phase tracking (HTTP/2).
    pub fn none() -> Self {
        RequestPhase(None)
    }
}

impl Drop for RequestPhase {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            p.in_request.store(false, Ordering::Release);
            if let Some((reader, task)) = lock(&p.reader).take() {
                // Ended by the connection's own task, the response's last bytes are still
                // to be written, and writing them arms the wait (`arm_once_ended`): waking
                // the task as well would only cost it another round.
                if task.is_none() || task != tokio::task::try_id() {
                    reader.wake();
                }
            }
        }
    }
}

/// What ended a connection while it waited for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitTimeout {
    /// Part of a request arrived but not all its headers: 408 was sent.
    Header,
    /// Nothing arrived: closed quietly.
    Idle,
}

pub struct PhaseIo<T> {
    inner: T,
    phase: Arc<ConnPhase>,
    request_header: Duration,
    client_idle: Duration,
    /// The timer for `due`. It may be set earlier than `due`: moving a timer at every
    /// request costs more than setting it again, now and then, when it fires early.
    deadline: Option<Pin<Box<Sleep>>>,
    /// When the wait armed ends.
    due: tokio::time::Instant,
    /// Whether `due` applies. A request in progress disarms it but keeps the timer:
    /// setting it again costs less than a new one, and a stale expiry only wakes the task.
    armed: bool,
    /// Whether bytes of the awaited request have arrived.
    receiving: bool,
    /// Whether the deadline armed is the park point rather than `client_idle`.
    parking: bool,
    /// Bytes hyper had read but not used when its connection was parked: read first.
    replay: Bytes,
    on_timeout: Option<Box<dyn FnOnce(WaitTimeout) + Send>>,
}

impl<T> PhaseIo<T> {
    pub fn new(
        inner: T,
        phase: Arc<ConnPhase>,
        request_header: Duration,
        client_idle: Duration,
        on_timeout: Box<dyn FnOnce(WaitTimeout) + Send>,
    ) -> Self {
        PhaseIo {
            inner,
            phase,
            request_header,
            client_idle,
            deadline: None,
            due: tokio::time::Instant::now(),
            armed: false,
            receiving: false,
            parking: false,
            replay: Bytes::new(),
            on_timeout: Some(on_timeout),
        }
    }

    pub fn phase(&self) -> Arc<ConnPhase> {
        self.phase.clone()
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Ready for the next hyper connection after parking, with the bytes the last one
    /// had read ahead.
    pub fn unpark(&mut self, read_ahead: Bytes) {
        // A copy: the bytes hyper hands back keep its whole read buffer alive.
        self.replay = Bytes::copy_from_slice(&read_ahead);
        self.deadline = None;
        self.armed = false;
        self.receiving = !self.replay.is_empty();
    }

    /// The idle wait that is left once the connection is parked.
    pub fn idle_after_park(&self) -> Duration {
        self.client_idle.saturating_sub(PARK_AFTER)
    }

    /// Arms the wait for the next request. The first must arrive whole within the header
    /// deadline; later ones may be preceded by an idle pause.
    fn arm_wait(&mut self) {
        let first = self.phase.requests() == 0;
        self.parking = !first && PARK_AFTER < self.client_idle;
        self.arm(if first {
            self.request_header
        } else if self.parking {
            PARK_AFTER
        } else {
            self.client_idle
        });
    }

    /// Once a request has ended, arms the wait for the next one from the write side, as
    /// hyper sends the response's last bytes: hyper's reader, blocked since it last found
    /// nothing, would otherwise only arm it at the client's next byte.
    fn arm_once_ended(&mut self, cx: &mut Context<'_>) {
        if self.armed || self.phase.in_request() {
            return;
        }
        self.arm_wait();
        // Registers the task's waker for the deadline; it cannot have passed yet.
        let _ = self.expired(cx);
    }

    fn arm(&mut self, after: Duration) {
        self.arm_at(tokio::time::Instant::now() + after);
    }

    fn arm_at(&mut self, due: tokio::time::Instant) {
        self.armed = true;
        self.due = due;
        match &mut self.deadline {
            Some(d) if d.deadline() <= self.due => {}
            Some(d) => d.as_mut().reset(self.due),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(self.due))),
        }
    }

    /// Whether `due` has passed; if not, the task is woken when it does (or earlier).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(d) = &mut self.deadline else {
            return false;
        };
        // Twice at most: a timer that fired early is set for the rest of the wait.
        loop {
            if d.as_mut().poll(cx).is_pending() {
                return false;
            }
            if d.deadline() >= self.due {
                return true;
            }
            d.as_mut().reset(self.due);
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for PhaseIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.replay.is_empty() {
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            return Poll::Ready(Ok(()));
        }
        if this.phase.in_request() {
            this.armed = false;
            this.receiving = false;
            let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
            if polled.is_pending() {
                let mut reader = lock(&this.phase.reader);
                if !reader
                    .as_ref()
                    .is_some_and(|(w, _)| w.will_wake(cx.waker()))
                {
                    *reader = Some((cx.waker().clone(), tokio::task::try_id()));
                }
            }
            return polled;
        }
        if !this.armed {
            this.arm_wait();
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            if buf.filled().len() > before && !this.receiving {
                this.receiving = true;
                this.parking = false;
                // One clock reading for both.
                let now = tokio::time::Instant::now();
                this.phase.mark_first_byte(now.into_std());
                this.arm_at(now + this.request_header);
            }
        }
        if polled.is_ready() {
            return polled;
        }
        if !this.expired(cx) {
            return Poll::Pending;
        }
        if this.parking && !this.receiving {
            // The listener parks the connection; should it not, the idle limit still holds.
            this.parking = false;
            this.phase.parked.notify_one();
            this.arm(this.idle_after_park());
            return self.as_mut().poll_read(cx, buf);
        }
        let what = if this.receiving {
            WaitTimeout::Header
        } else {
            WaitTimeout::Idle
        };
        if let Some(report) = this.on_timeout.take() {
            report(what);
        }
        if what == WaitTimeout::Idle {
            return Poll::Ready(Ok(()));
        }
        // Best effort: the socket buffer of a connection this quiet has room for it.
        let _ = Pin::new(&mut this.inner).poll_write(cx, TIMEOUT_408);
        let _ = Pin::new(&mut this.inner).poll_flush(cx);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request header timed out",
        )))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PhaseIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.arm_once_ended(cx);
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.arm_once_ended(cx);
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
