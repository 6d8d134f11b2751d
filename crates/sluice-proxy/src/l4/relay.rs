//! Copying a TCP connection's bytes both ways until both sides are done. Each direction
//! ends on its own (half-close: the reader's end of stream becomes the writer's
//! shutdown), an error on either side ends both, and the whole connection ends when no
//! byte moved either way for the idle time.
//!
//! On Linux the bytes go socket -> pipe -> socket with `splice`, never through user
//! space; elsewhere, or if the kernel refuses, through one buffer per direction.
//!
//! Each direction registers its own two ends with the runtime: its source for reading
//! only and its destination for writing only. While a direction waits for its
//! destination to take more (a slow receiver), it withdraws its source's registration,
//! as HAProxy stops polling a full buffer's source: a fast sender keeps delivering
//! segments meanwhile, and with the source registered every one of them would wake the
//! thread for bytes there is nowhere to put. On a 64 MiB transfer to a slower client
//! those were six wake-ups in seven (docs/performance.md).

use std::future::Future;
use std::io;
use std::mem;
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
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
    /// The sockets could not be set up for relaying (out of file descriptors, say).
    Failed,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Done => "done",
            End::ClientError => "client_error",
            End::ServerError => "server_error",
            End::IdleTimeout => "idle_timeout",
            End::Stopped => "drain_timeout",
            End::Failed => "relay_failed",
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
    client: TcpStream,
    server: TcpStream,
    idle: Duration,
    splice: bool,
    stop: impl Future<Output = ()>,
) -> Relayed {
    let (up, down) = match directions(client, server) {
        Ok(directions) => directions,
        Err(e) => {
            tracing::warn!("cannot relay: {e}");
            return Relayed {
                up: 0,
                down: 0,
                end: End::Failed,
            };
        }
    };
    let meter = Meter {
        start: Instant::now(),
        last: AtomicU64::new(0),
    };
    let up_bytes = AtomicU64::new(0);
    let down_bytes = AtomicU64::new(0);
    let up = pump(up, splice, &meter, &up_bytes);
    let down = pump(down, splice, &meter, &down_bytes);
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

/// Client to server and server to client. Each socket serves as one direction's source
/// and, through a duplicate descriptor (its own registration), the other's destination.
fn directions(client: TcpStream, server: TcpStream) -> io::Result<(Direction, Direction)> {
    let client = OwnedFd::from(client.into_std()?);
    let server = OwnedFd::from(server.into_std()?);
    let to_client = Sink::new(duplicate(&client)?)?;
    let to_server = Sink::new(duplicate(&server)?)?;
    let up = Direction {
        from: Source::new(client)?,
        to: to_server,
    };
    let down = Direction {
        from: Source::new(server)?,
        to: to_client,
    };
    Ok((up, down))
}

fn duplicate(fd: &OwnedFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 0)?)
}

/// Registers `fd` with the runtime for `interest` alone.
fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` owns the `OwnedFd`, so the descriptor stays open and names the
    // same socket until the registration is dropped or taken apart with `into_inner`.
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

struct Direction {
    from: Source,
    to: Sink,
}

/// Where a direction reads: registered for reading, except while the direction waits
/// to write.
enum Source {
    Registered(AsyncFd<OwnedFd>),
    Paused(OwnedFd),
    /// Between the two, and for good if registering again failed.
    Moving,
}

impl Source {
    fn new(fd: OwnedFd) -> io::Result<Source> {
        Ok(Source::Registered(register(fd, Interest::READABLE)?))
    }

    /// Stops readiness reports until the next read.
    fn pause(&mut self) {
        *self = match mem::replace(self, Source::Moving) {
            Source::Registered(fd) => Source::Paused(fd.into_inner()),
            other => other,
        };
    }

    /// Runs `op` on the socket once it is readable, registering it again if paused (the
    /// kernel reports what is already waiting at once).
    async fn read(
        &mut self,
        mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<usize>,
    ) -> io::Result<usize> {
        *self = match mem::replace(self, Source::Moving) {
            Source::Paused(fd) => Source::new(fd)?,
            other => other,
        };
        let Source::Registered(fd) = self else {
            return Err(io::Error::other("relay source lost its socket"));
        };
        loop {
            let mut ready = fd.readable().await?;
            if let Ok(result) = ready.try_io(|fd| op(fd.get_ref().as_fd())) {
                return result;
            }
        }
    }
}

/// Where a direction writes: registered for writing only.
struct Sink(AsyncFd<OwnedFd>);

impl Sink {
    fn new(fd: OwnedFd) -> io::Result<Sink> {
        Ok(Sink(register(fd, Interest::WRITABLE)?))
    }

    /// Runs `op` on the socket once it is writable; while it is not, `source` is paused.
    async fn write(
        &self,
        mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<usize>,
        source: &mut Source,
    ) -> io::Result<usize> {
        loop {
            let mut ready = self.0.writable().await?;
            match ready.try_io(|fd| op(fd.get_ref().as_fd())) {
                Ok(result) => return result,
                Err(_would_block) => source.pause(),
            }
        }
    }

    /// The peer learns that no more bytes come this way (half-close).
    fn finish(&self) {
        // Already closed by the peer is not an error worth ending the other direction for.
        let _ = socket2::SockRef::from(self.0.get_ref()).shutdown(Shutdown::Write);
    }
}

/// Which end of a direction failed.
enum Side {
    Read,
    Write,
}

/// One direction until its source ends; then its destination's sending side is shut.
async fn pump(
    mut dir: Direction,
    splice: bool,
    meter: &Meter,
    moved: &AtomicU64,
) -> Result<(), Side> {
    #[cfg(target_os = "linux")]
    if splice {
        match zero_copy::Pipe::new() {
            Ok(pipe) => match pipe.pump(&mut dir, meter, moved).await {
                Err(zero_copy::Failed::Unsupported) => {}
                other => return finish(&dir, other.map_err(zero_copy::Failed::side)),
            },
            Err(e) => tracing::debug!("no pipe for splice, copying instead: {e}"),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = splice;
    let copied = buffered(&mut dir, meter, moved).await;
    finish(&dir, copied)
}

/// After a direction's source ended cleanly, the destination learns it.
fn finish(dir: &Direction, result: Result<(), Side>) -> Result<(), Side> {
    result?;
    dir.to.finish();
    Ok(())
}

const CHUNK: usize = 64 * 1024;

async fn buffered(dir: &mut Direction, meter: &Meter, moved: &AtomicU64) -> Result<(), Side> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let read = dir.from.read(|fd| Ok(rustix::io::read(fd, &mut buf[..])?));
        let n = read.await.map_err(|_| Side::Read)?;
        if n == 0 {
            return Ok(());
        }
        meter.touch();
        let mut data = &buf[..n];
        while !data.is_empty() {
            let write = dir
                .to
                .write(|fd| Ok(rustix::io::write(fd, data)?), &mut dir.from);
            data = &data[write.await.map_err(|_| Side::Write)?..];
        }
        moved.fetch_add(n as u64, Ordering::Relaxed);
        meter.touch();
    }
}

#[cfg(target_os = "linux")]
mod zero_copy {
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

    const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

    impl Pipe {
        pub fn new() -> io::Result<Pipe> {
            let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
            // A larger pipe moves more per system call; the default (64 KiB) is fine too.
            let _ = fcntl_setpipe_size(&write, 256 * 1024);
            Ok(Pipe { read, write })
        }

        pub async fn pump(
            &self,
            dir: &mut Direction,
            meter: &Meter,
            moved: &AtomicU64,
        ) -> Result<(), Failed> {
            let mut first = true;
            loop {
                let read = dir
                    .from
                    .read(|src| Ok(splice(src, None, &self.write, None, 1 << 20, FLAGS)?));
                let n = match read.await {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if first && unsupported(&e) => return Err(Failed::Unsupported),
                    Err(_) => return Err(Failed::On(Side::Read)),
                };
                first = false;
                meter.touch();
                self.drain_into(dir, n).await?;
                moved.fetch_add(n as u64, Ordering::Relaxed);
                meter.touch();
            }
        }

        /// Moves `n` bytes from the pipe to the direction's destination.
        async fn drain_into(&self, dir: &mut Direction, mut n: usize) -> Result<(), Failed> {
            while n > 0 {
                let write = dir.to.write(
                    |dst| Ok(splice(&self.read, None, dst, None, n, FLAGS)?),
                    &mut dir.from,
                );
                n -= write.await.map_err(|_| Failed::On(Side::Write))?;
            }
            Ok(())
        }
    }

    fn unsupported(e: &io::Error) -> bool {
        let errno = e.raw_os_error().map(Errno::from_raw_os_error);
        matches!(errno, Some(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::fd::{AsRawFd, RawFd};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Two connected sockets on loopback: (sluice's end, the peer's).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = TcpStream::connect(listener.local_addr().unwrap());
        let (peer, accepted) = tokio::join!(connect, listener.accept());
        (accepted.unwrap().0, peer.unwrap())
    }

    /// Whether any epoll instance of this process watches descriptor `fd`.
    fn polled(fd: RawFd) -> bool {
        let fd = fd.to_string();
        let watches = |info: String| {
            info.lines()
                .any(|line| line.split_whitespace().take(2).eq(["tfd:", fd.as_str()]))
        };
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|entry| {
                std::fs::read_link(entry.path())
                    .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventpoll]")
            })
            .any(|entry| {
                let info = format!("/proc/self/fdinfo/{}", entry.file_name().to_string_lossy());
                std::fs::read_to_string(info).is_ok_and(watches)
            })
    }

    /// Waits up to 5 s for `polled(fd)` to be `want`.
    async fn until_polled(fd: RawFd, want: bool) -> bool {
        for _ in 0..500 {
            if polled(fd) == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    const BULK: usize = 32 << 20;

    #[tokio::test]
    async fn a_direction_waiting_on_a_slow_reader_stops_polling_its_source_until_it_reads_again() {
        for splice in [true, false] {
            let (client, mut client_peer) = pair().await;
            let (server, mut server_peer) = pair().await;
            let source = server.as_raw_fd();
            let idle = Duration::from_secs(30);
            let relay = tokio::spawn(relay(client, server, idle, splice, std::future::pending()));

            // The server sends far more than the client, not reading yet, can take.
            let sending = tokio::spawn(async move {
                let chunk = vec![7u8; 1 << 20];
                for _ in 0..BULK >> 20 {
                    server_peer.write_all(&chunk).await.unwrap();
                }
                server_peer
            });
            assert!(
                until_polled(source, false).await,
                "splice={splice}: the source is still polled while the client does not read"
            );

            let mut buf = vec![0u8; 1 << 16];
            let mut received = 0;
            while received < BULK {
                let n = client_peer.read(&mut buf).await.unwrap();
                assert!(n > 0, "splice={splice}: early end after {received} bytes");
                received += n;
            }
            let mut server_peer = sending.await.unwrap();
            assert!(
                until_polled(source, true).await,
                "splice={splice}: the source is not polled again once the client reads"
            );

            // Bytes after the pause still arrive at once, both ways.
            server_peer.write_all(b"after").await.unwrap();
            let mut after = [0u8; 5];
            let reading = client_peer.read_exact(&mut after);
            tokio::time::timeout(Duration::from_secs(5), reading)
                .await
                .expect("bytes sent after the pause arrive")
                .unwrap();
            assert_eq!(&after, b"after");
            client_peer.write_all(b"ping").await.unwrap();
            let mut ping = [0u8; 4];
            server_peer.read_exact(&mut ping).await.unwrap();
            assert_eq!(&ping, b"ping");

            client_peer.shutdown().await.unwrap();
            server_peer.shutdown().await.unwrap();
            let relayed = tokio::time::timeout(Duration::from_secs(5), relay)
                .await
                .expect("the relay ends when both sides have")
                .unwrap();
            assert_eq!(relayed.end, End::Done, "splice={splice}");
            assert_eq!((relayed.up, relayed.down), (4, BULK as u64 + 5));
        }
    }
}
