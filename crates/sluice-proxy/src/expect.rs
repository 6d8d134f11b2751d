//! `Expect: 100-continue`, forwarded. The client waits for a `100 Continue` before it
//! sends its body, and hyper answers that 100 itself the moment the body is first read.
//! So the body is held behind a gate that opens only when the server's own 100 arrives
//! (or, for servers that ignore `Expect`, after a wait): reading it then makes hyper send
//! the client its 100, which is how the server's 100 is relayed. A server that answers
//! with a final status first (a 401) gets its answer relayed without the body ever being
//! asked for; when that exchange ends the client's unread body is released, and hyper
//! drains it if it is already there or closes the connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::EXPECT;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::Sleep;

use crate::sync::lock;
use crate::upstream::{BoxError, UpstreamBody};

const WAITING: u8 = 0;
const OPEN: u8 = 1;
/// A final response came first: the body will not be sent.
const ANSWERED: u8 = 2;

/// Does the request ask for a `100 Continue` before its body?
pub fn expects_continue(headers: &HeaderMap) -> bool {
    headers.get(EXPECT).is_some_and(|v| {
        v.as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"100-continue")
    })
}

struct Shared {
    state: AtomicU8,
    body: Mutex<Option<UpstreamBody>>,
    waker: Mutex<Option<Waker>>,
}

impl Shared {
    fn set(&self, from: u8, to: u8) -> bool {
        let changed = self
            .state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if changed {
            self.wake();
        }
        changed
    }

    fn wake(&self) {
        if let Some(w) = lock(&self.waker).take() {
            w.wake();
        }
    }
}

/// The request body as the server connection sees it: nothing until the gate opens.
struct Gate {
    shared: Arc<Shared>,
    timer: Pin<Box<Sleep>>,
    size: SizeHint,
}

/// The proxy's side of a gate.
#[derive(Clone)]
pub struct GateHandle(Arc<Shared>);

impl GateHandle {
    /// The server sent `100 Continue`: let the body through.
    pub fn proceed(&self) {
        self.0.set(WAITING, OPEN);
    }

    /// The server sent its final response head. True when it did so before asking for
    /// the body, which then will never be sent (and the connection cannot be reused).
    pub fn answered(&self) -> bool {
        self.0.set(WAITING, ANSWERED) || self.0.state.load(Ordering::Acquire) == ANSWERED
    }

    /// The exchange is over: a body that was never asked for is let go.
    pub fn release(&self) {
        if self.0.state.load(Ordering::Acquire) == ANSWERED {
            drop(lock(&self.0.body).take());
            self.0.wake();
        }
    }
}

/// Puts `body` behind a gate that opens on the server's 100 or after `wait`.
pub fn gate(body: UpstreamBody, wait: Duration) -> (UpstreamBody, GateHandle) {
    let size = body.size_hint();
    let shared = Arc::new(Shared {
        state: AtomicU8::new(WAITING),
        body: Mutex::new(Some(body)),
        waker: Mutex::new(None),
    });
    let gate = Gate {
        shared: shared.clone(),
        timer: Box::pin(tokio::time::sleep(wait)),
        size,
    };
    (gate.boxed_unsync(), GateHandle(shared))
}

impl Body for Gate {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        *lock(&this.shared.waker) = Some(cx.waker().clone());
        match this.shared.state.load(Ordering::Acquire) {
            WAITING if this.timer.as_mut().poll(cx).is_ready() => {
                // The server never asked: send the body anyway, as clients do.
                this.shared.set(WAITING, OPEN);
                self.poll_frame(cx)
            }
            OPEN => match lock(&this.shared.body).as_mut() {
                Some(body) => Pin::new(body).poll_frame(cx),
                None => Poll::Ready(None),
            },
            ANSWERED if lock(&this.shared.body).is_none() => Poll::Ready(Some(Err(
                "the server answered before asking for the request body".into(),
            ))),
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) == OPEN
            && lock(&self.shared.body)
                .as_ref()
                .is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}
