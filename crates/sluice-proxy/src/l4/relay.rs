//! Copying a TCP connection's bytes both ways until both sides are done. Each direction
//! ends on its own (half-close: the reader's end of stream becomes the writer's
//! shutdown), an error on either side ends both, and the whole connection ends when no
//! byte moved either way for the idle time.
//!
//! On Linux the bytes go socket -> pipe -> socket with `splice`, never through user
//! space; elsewhere, or if the kernel refuses, through one buffer per direction.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// How a relayed connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides finished sending.
    Done,
    ClientError,
    ServerError,
    IdleTimeout,
    /// `stop` completed (a drain timed out).
    Stopped,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Done => "done",
            End::ClientError => "client_error",
            End::ServerError => "server_error",
            End::IdleTimeout => "idle_timeout",
            End::Stopped => "drain_timeout",
        }
    }
}

/// What a relay moved and how it ended.
#[derive(Debug, Clone, Copy)]
pub struct Relayed {
    /// Client to server.
    pub up: u64,
    /// Server to client.
    pub down: u64,
    pub end: End,
}

/// Bytes moved in one direction, and when anything last moved in either.
struct Meter {
    start: Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
}

impl Meter {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// Completes once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// Relays between `client` and `server` until both directions end, one fails, nothing
/// moves for `idle`, or `stop` completes.
pub async fn relay(
    client: &TcpStream,
    server: &TcpStream,
    idle: Duration,
    splice: bool,
    stop: impl Future<Output = ()>,
) -> Relayed {
    let meter = Meter {
        start: Instant::now(),
        last: AtomicU64::new(0),
    };
    let up_bytes = AtomicU64::new(0);
    let down_bytes = AtomicU64::new(0);
    let up = pump(client, server, splice, &meter, &up_bytes);
    let down = pump(server, client, splice, &meter, &down_bytes);
    tokio::pin!(up, down, stop);
    let (mut up_done, mut down_done) = (false, false);
    let end = loop {
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(Side::Read) => break End::ClientError,
                Err(Side::Write) => break End::ServerError,
            },
            r = &mut down, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(Side::Read) => break End::ServerError,
                Err(Side::Write) => break End::ClientError,
            },
            _ = meter.idle_for(idle) => break End::IdleTimeout,
            _ = &mut stop => break End::Stopped,
        }
        if up_done && down_done {
            break End::Done;
        }
    };
    Relayed {
        up: up_bytes.load(Ordering::Relaxed),
        down: down_bytes.load(Ordering::Relaxed),
        end,
    }
}

/// Which end of a direction failed.
enum Side {
    Read,
    Write,
}

/// One direction: `src` to `dst` until `src` ends, then `dst`'s sending side is shut.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    splice: bool,
    meter: &Meter,
    moved: &AtomicU64,
) -> Result<(), Side> {
    #[cfg(target_os = "linux")]
    if splice {
        match zero_copy::Pipe::new() {
            Ok(pipe) => match pipe.pump(src, dst, meter, moved).await {
                Err(zero_copy::Failed::Unsupported) => {}
                other => return finish(dst, other.map_err(zero_copy::Failed::side)),
            },
            Err(e) => tracing::debug!("no pipe for splice, copying instead: {e}"),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = splice;
    finish(dst, buffered(src, dst, meter, moved).await)
}

/// After a direction's source ended cleanly, the destination learns it (half-close).
fn finish(dst: &TcpStream, result: Result<(), Side>) -> Result<(), Side> {
    result?;
    // Already closed by the peer is not an error worth ending the other direction for.
    let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
    Ok(())
}

const CHUNK: usize = 64 * 1024;

async fn buffered(
    src: &TcpStream,
    dst: &TcpStream,
    meter: &Meter,
    moved: &AtomicU64,
) -> Result<(), Side> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        src.readable().await.map_err(|_| Side::Read)?;
        let n = match src.try_read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => return Err(Side::Read),
        };
        meter.touch();
        write_all(dst, &buf[..n]).await.map_err(|_| Side::Write)?;
        moved.fetch_add(n as u64, Ordering::Relaxed);
        meter.touch();
    }
}

/// Writes all of `data` to a stream shared by reference.
pub async fn write_all(dst: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        dst.writable().await?;
        match dst.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
mod zero_copy {
    use std::os::fd::OwnedFd;

    use rustix::io::Errno;
    use rustix::pipe::{fcntl_setpipe_size, pipe_with, splice, PipeFlags, SpliceFlags};

    use super::*;

    /// Why a spliced direction stopped.
    pub enum Failed {
        /// The kernel cannot splice these sockets (nothing was moved yet).
        Unsupported,
        On(Side),
    }

    impl Failed {
        pub fn side(self) -> Side {
            match self {
                Failed::Unsupported => Side::Read,
                Failed::On(side) => side,
            }
        }
    }

    /// A kernel pipe that bytes pass through on their way from one socket to the other.
    pub struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Pipe {
        pub fn new() -> io::Result<Pipe> {
            let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
            // A larger pipe moves more per system call; the default (64 KiB) is fine too.
            let _ = fcntl_setpipe_size(&write, 256 * 1024);
            Ok(Pipe { read, write })
        }

        pub async fn pump(
            &self,
            src: &TcpStream,
            dst: &TcpStream,
            meter: &Meter,
            moved: &AtomicU64,
        ) -> Result<(), Failed> {
            let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
            let mut first = true;
            loop {
                src.readable().await.map_err(|_| Failed::On(Side::Read))?;
                let read = src.try_io(Interest::READABLE, || {
                    splice(src, None, &self.write, None, 1 << 20, flags).map_err(io::Error::from)
                });
                let n = match read {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) if first && unsupported(&e) => return Err(Failed::Unsupported),
                    Err(_) => return Err(Failed::On(Side::Read)),
                };
                first = false;
                meter.touch();
                self.drain_into(dst, n).await?;
                moved.fetch_add(n as u64, Ordering::Relaxed);
                meter.touch();
            }
        }

        /// Moves `n` bytes from the pipe to `dst`.
        async fn drain_into(&self, dst: &TcpStream, mut n: usize) -> Result<(), Failed> {
            let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
            while n > 0 {
                dst.writable().await.map_err(|_| Failed::On(Side::Write))?;
                let written = dst.try_io(Interest::WRITABLE, || {
                    splice(&self.read, None, dst, None, n, flags).map_err(io::Error::from)
                });
                match written {
                    Ok(m) => n -= m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(_) => return Err(Failed::On(Side::Write)),
                }
            }
            Ok(())
        }
    }

    fn unsupported(e: &io::Error) -> bool {
        let errno = e.raw_os_error().map(Errno::from_raw_os_error);
        matches!(errno, Some(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP))
    }
}
