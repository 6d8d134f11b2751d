//! Bodies stream through frame by frame: nothing is buffered beyond the frame in hand, so
//! memory per request stays bounded whatever the declared length. Each direction counts
//! its bytes and enforces an idle limit between frames. The response body also finishes
//! the request: it returns the server connection for reuse and writes the log line.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::access_log::{AccessLog, Record};
use crate::conn_io::RequestPhase;
use crate::expect::GateHandle;
use crate::pinning::{Leased, Reuse};
use crate::server::ActiveGuard;
use crate::upstream::BoxError;

/// What both directions of one request share.
pub struct Exchange {
    pub start: Instant,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Milliseconds after `start` when a request body frame last went through.
    last_upload_ms: AtomicU64,
    /// Why the request body failed, if it was the client's doing (an [`UploadFault`]).
    upload_fault: AtomicU8,
}

/// How a client's request body failed: the request is then the client's fault, whatever
/// the server made of the half it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum UploadFault {
    /// Past its size limit: cut.
    TooLarge = 1,
    /// Not valid framing (a bad chunk), or the client went away inside it.
    Malformed = 2,
    /// No data for longer than the idle limit.
    Idle = 3,
}

impl Exchange {
    pub fn new(start: Instant) -> Arc<Self> {
        Arc::new(Exchange {
            start,
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            last_upload_ms: AtomicU64::new(0),
            upload_fault: AtomicU8::new(0),
        })
    }

    /// Why the request body failed, if the client failed it.
    pub fn upload_fault(&self) -> Option<UploadFault> {
        match self.upload_fault.load(Ordering::Relaxed) {
            1 => Some(UploadFault::TooLarge),
            2 => Some(UploadFault::Malformed),
            3 => Some(UploadFault::Idle),
            _ => None,
        }
    }

    fn fault(&self, fault: UploadFault) {
        let _ = self.upload_fault.compare_exchange(
            0,
            fault as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// When the client last sent body data (or the request started).
    pub fn last_upload(&self) -> Instant {
        self.start + Duration::from_millis(self.last_upload_ms.load(Ordering::Relaxed))
    }

    fn touch_upload(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_upload_ms.fetch_max(ms, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upload,
    Download,
}

/// A body relayed frame by frame, counted, failing after `idle` without a frame.
pub struct Metered {
    inner: Incoming,
    exchange: Arc<Exchange>,
    direction: Direction,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// Most bytes this body may carry.
    max: Option<u64>,
    seen: u64,
}

impl Metered {
    pub fn new(
        inner: Incoming,
        exchange: Arc<Exchange>,
        direction: Direction,
        idle: Duration,
    ) -> Self {
        Metered {
            inner,
            exchange,
            direction,
            idle,
            timer: None,
            max: None,
            seen: 0,
        }
    }

    /// Fails the body once more than `max` bytes have gone through.
    pub fn limit(mut self, max: Option<u64>) -> Self {
        self.max = max;
        self
    }

    /// Counts a frame; false (and nothing counted) once the body is past its limit.
    fn count(&mut self, frame: &Frame<Bytes>) -> bool {
        let n = frame.data_ref().map_or(0, |d| d.len() as u64);
        self.seen += n;
        if self.max.is_some_and(|max| self.seen > max) {
            self.exchange.fault(UploadFault::TooLarge);
            return false;
        }
        match self.direction {
            Direction::Upload => {
                self.exchange.bytes_in.fetch_add(n, Ordering::Relaxed);
                self.exchange.touch_upload();
            }
            Direction::Download => {
                self.exchange.bytes_out.fetch_add(n, Ordering::Relaxed);
            }
        }
        true
    }

    /// Pending on the inner body: is the idle limit up?
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let idle = self.idle;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        timer.as_mut().poll(cx).is_ready()
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if !this.count(&frame) {
                    let msg = format!("body larger than {} bytes", this.max.unwrap_or(0));
                    return Poll::Ready(Some(Err(msg.into())));
                }
                if let Some(t) = this.timer.as_mut() {
                    t.as_mut().reset(tokio::time::Instant::now() + this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if this.direction == Direction::Upload {
                    this.exchange.fault(UploadFault::Malformed);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending if this.idle_expired(cx) => {
                let who = match this.direction {
                    Direction::Upload => {
                        this.exchange.fault(UploadFault::Idle);
                        "client"
                    }
                    Direction::Download => "server",
                };
                let msg = format!("{who} sent no body data for {}s", this.idle.as_secs());
                Poll::Ready(Some(Err(msg.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Closes the books on one proxied request when its response ends.
pub struct Finish {
    pub leased: Leased,
    pub reuse: Reuse,
    pub gate: Option<GateHandle>,
    pub active: ActiveGuard,
    pub record: Record,
    pub exchange: Arc<Exchange>,
    pub log: AccessLog,
    pub phase: RequestPhase,
}

impl Finish {
    pub fn complete(self, end: &'static str) {
        let Finish {
            leased,
            reuse,
            gate,
            active,
            mut record,
            exchange,
            log,
            phase,
        } = self;
        leased.end_exchange();
        if end == "done" {
            reuse.settle(leased);
        }
        if let Some(gate) = gate {
            gate.release();
        }
        drop(active);
        record.end = end;
        record.bytes_in = exchange.bytes_in.load(Ordering::Relaxed);
        record.bytes_out = exchange.bytes_out.load(Ordering::Relaxed);
        record.t_total = Some(exchange.start.elapsed());
        log.write(&record);
        drop(phase);
    }
}

/// What polling a body gives.
type Polled = Option<Result<Frame<Bytes>, BoxError>>;

/// Relayed bodies of a known length up to this are waited for before their head goes out.
const SMALL_BODY: u64 = 16 * 1024;

/// The body of every response sluice sends to a client.
pub enum ProxyBody {
    /// Made by sluice itself (errors, the sorry page).
    Local {
        data: Option<Bytes>,
        _phase: RequestPhase,
    },
    /// Relayed from a server.
    Relayed {
        body: Metered,
        finish: Option<Box<Finish>>,
        /// What the first poll gave, when it was made before the head went out.
        ahead: Option<Polled>,
    },
}

impl ProxyBody {
    pub fn local(data: impl Into<Bytes>, phase: RequestPhase) -> Self {
        ProxyBody::Local {
            data: Some(data.into()),
            _phase: phase,
        }
    }

    pub fn relayed(body: Metered, finish: Finish) -> Self {
        if body.is_end_stream() {
            finish.complete("done");
            return ProxyBody::Relayed {
                body,
                finish: None,
                ahead: None,
            };
        }
        ProxyBody::Relayed {
            body,
            finish: Some(Box::new(finish)),
            ahead: None,
        }
    }

    /// Waits for the first frame of a small relayed body of known length, so that the
    /// head goes out with it. A server writes such a body right behind its head, but it
    /// may arrive a moment later; the head sent alone would cost a packet, and the
    /// client's acknowledgement of it, for nothing the client can use without the body.
    /// Bodies of unknown length or larger ones (streams, long polls) are never held.
    pub async fn with_small_body_ahead(mut self) -> Self {
        let ProxyBody::Relayed {
            body,
            finish: Some(_),
            ..
        } = &self
        else {
            return self;
        };
        if !body
            .size_hint()
            .exact()
            .is_some_and(|n| n > 0 && n <= SMALL_BODY)
        {
            return self;
        }
        let first = std::future::poll_fn(|cx| Pin::new(&mut self).poll_frame(cx)).await;
        if let ProxyBody::Relayed { ahead, .. } = &mut self {
            *ahead = Some(first);
        }
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Local { data, .. } => Poll::Ready(
                data.take()
                    .filter(|d| !d.is_empty())
                    .map(|d| Ok(Frame::data(d))),
            ),
            ProxyBody::Relayed {
                body,
                finish,
                ahead,
            } => {
                if let Some(first) = ahead.take() {
                    return Poll::Ready(first);
                }
                let polled = Pin::new(&mut *body).poll_frame(cx);
                let end = match &polled {
                    // hyper stops polling once a declared length has arrived, so the end
                    // is noticed with the last frame, not only with the final `None`.
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => Some("done"),
                    Poll::Ready(None) => Some("done"),
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!("response body from server failed: {e}");
                        Some("server_aborted")
                    }
                    _ => None,
                };
                if let Some(end) = end {
                    if let Some(f) = finish.take() {
                        f.complete(end);
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local { data, .. } => data.as_ref().is_none_or(|d| d.is_empty()),
            ProxyBody::Relayed {
                body,
                finish,
                ahead,
            } => ahead.is_none() && finish.is_none() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Relayed { body, ahead, .. } => {
                let held = match ahead {
                    Some(Some(Ok(frame))) => frame.data_ref().map_or(0, |d| d.len() as u64),
                    _ => 0,
                };
                match body.size_hint().exact() {
                    Some(left) => SizeHint::with_exact(left + held),
                    None => body.size_hint(),
                }
            }
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let ProxyBody::Relayed { finish, .. } = self {
            if let Some(f) = finish.take() {
                f.complete("client_closed");
            }
        }
    }
}
