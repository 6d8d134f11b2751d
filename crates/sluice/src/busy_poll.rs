//! Busy polling: before the one traffic thread sleeps, it watches its event queue for new
//! work for a few microseconds.
//!
//! Under steady load most of that thread's waits are short: the next bytes from a client
//! or server arrive within a few microseconds. Sleeping through them is not free: the
//! core halts, and the process that sends the bytes must wake it with an interrupt,
//! sent on that process's core (on a virtual machine, through the hypervisor).
//! Watching for a moment instead catches most of those bytes awake; a wait that outlasts
//! the watch sleeps as before. docs/performance.md has the figures.
//!
//! tokio offers no such wait, so the hook it runs before each sleep asks the kernel
//! whether tokio's own epoll instance has anything ready. It asks a second epoll
//! instance that watches tokio's: that reports tokio's readiness without taking its
//! events, which tokio's next `epoll_wait` collects, and answers "nothing" in 100 ns
//! where `poll` on tokio's descriptor takes 250 (the watch asks about once per request).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::event::Timespec;
use tokio::runtime::{Builder, Runtime};

/// An epoll instance watching the runtime's own, once the runtime is built and found.
#[derive(Clone, Default)]
pub struct Watch(Arc<OnceLock<OwnedFd>>);

impl Watch {
    /// Makes every sleep of the runtime built from `builder` start with a watch of up to
    /// `budget`, once [`Watch::arm`] has found that runtime's event queue.
    pub fn install(builder: &mut Builder, budget: Duration) -> Watch {
        let watch = Watch::default();
        let hook = watch.clone();
        builder.on_thread_park(move || {
            if let Some(watcher) = hook.0.get() {
                watch_for_work(watcher.as_fd(), budget);
            }
        });
        watch
    }

    /// Starts watching `runtime`'s event queue. False, and no watching, when it cannot be
    /// found.
    pub fn arm(&self, runtime: &Runtime) -> bool {
        watcher_of(runtime).is_some_and(|watcher| self.0.set(watcher).is_ok())
    }
}

/// Returns once the runtime's queue, watched by `watcher`, has an event ready (true) or
/// `budget` has passed (false).
fn watch_for_work(watcher: BorrowedFd<'_>, budget: Duration) -> bool {
    let at_once = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut ready = [Event {
        flags: EventFlags::empty(),
        data: EventData::new_u64(0),
    }];
    let started = Instant::now();
    loop {
        if epoll::wait(watcher, &mut ready[..], Some(&at_once)).is_ok_and(|n| n > 0) {
            return true;
        }
        if started.elapsed() >= budget {
            return false;
        }
        std::hint::spin_loop();
    }
}

/// An epoll instance watching the one `runtime` registers its sockets with: the one
/// that lists a socket registered through the runtime a moment ago.
fn watcher_of(runtime: &Runtime) -> Option<OwnedFd> {
    let _entered = runtime.enter();
    let (probe, _peer) = tokio::net::UnixStream::pair().ok()?;
    let probe_inode = std::fs::metadata(format!("/proc/self/fd/{}", probe.as_raw_fd()))
        .ok()?
        .ino();
    let queue = epoll_descriptors()
        .into_iter()
        .find(|&queue| lists(queue, probe.as_raw_fd(), probe_inode))?;
    // SAFETY: `queue` lists the probe, so it is `runtime`'s, which holds it open until it
    // is dropped, and it is borrowed here. The watcher does not keep it: the kernel
    // takes it off the watcher's list when it closes.
    let queue = unsafe { BorrowedFd::borrow_raw(queue) };
    let watcher = epoll::create(CreateFlags::CLOEXEC).ok()?;
    // Level-triggered: the watcher reports the queue for as long as it has events.
    epoll::add(&watcher, queue, EventData::new_u64(0), EventFlags::IN).ok()?;
    Some(watcher)
}

/// The process's open epoll descriptors.
fn epoll_descriptors() -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter(|entry| {
            std::fs::read_link(entry.path())
                .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventpoll]")
        })
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}

/// Whether epoll instance `queue` watches descriptor `fd` with inode `inode`: a line
/// `tfd: <fd> events: ... ino:<inode, hex> ...` of its `/proc/self/fdinfo` entry.
fn lists(queue: RawFd, fd: RawFd, inode: u64) -> bool {
    let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{queue}")) else {
        return false;
    };
    info.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("tfd:")
            && words.next().and_then(|n| n.parse().ok()) == Some(fd)
            && words.any(|w| {
                w.strip_prefix("ino:")
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                    == Some(inode)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixStream;
    use tokio::task::JoinHandle;

    const LONG: Duration = Duration::from_secs(5);
    const BRIEF: Duration = Duration::from_micros(200);

    fn armed_runtime() -> (Runtime, Watch) {
        let mut builder = Builder::new_current_thread();
        let watch = Watch::install(&mut builder, Duration::from_micros(2));
        let runtime = builder.enable_all().build().unwrap();
        assert!(
            watch.arm(&runtime),
            "the runtime's epoll instance was found"
        );
        (runtime, watch)
    }

    fn watcher(watch: &Watch) -> BorrowedFd<'_> {
        watch.0.get().unwrap().as_fd()
    }

    /// A task of the current runtime waiting for a byte, and the socket to send it on.
    async fn waiting_reader() -> (JoinHandle<u8>, UnixStream) {
        let (mut reader, writer) = UnixStream::pair().unwrap();
        let task = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            reader.read_exact(&mut byte).await.unwrap();
            byte[0]
        });
        // The reader runs, finds nothing to read and waits.
        tokio::task::yield_now().await;
        (task, writer)
    }

    fn until_seen(watcher: BorrowedFd<'_>) {
        let started = Instant::now();
        while !watch_for_work(watcher, Duration::from_millis(1)) {
            assert!(started.elapsed() < LONG, "the byte was never seen");
        }
    }

    #[test]
    fn the_watch_sees_bytes_arrive_for_a_waiting_task_and_leaves_them_to_tokio() {
        let (runtime, watch) = armed_runtime();
        runtime.block_on(async {
            let (reader, writer) = waiting_reader().await;
            assert!(!watch_for_work(watcher(&watch), BRIEF), "nothing yet");
            // The byte arrives while the runtime is not polling: the watch sees it.
            assert_eq!(writer.try_write(b"x").unwrap(), 1);
            until_seen(watcher(&watch));
            // Watching took nothing: the reader still gets its byte.
            let got = tokio::time::timeout(LONG, reader).await.unwrap().unwrap();
            assert_eq!(got, b'x');
            assert!(!watch_for_work(watcher(&watch), BRIEF), "nothing left");
        });
    }

    #[test]
    fn each_runtime_watches_its_own_event_queue() {
        let (first, first_watch) = armed_runtime();
        let (_second, second_watch) = armed_runtime();
        first.block_on(async {
            let (reader, writer) = waiting_reader().await;
            assert_eq!(writer.try_write(b"x").unwrap(), 1);
            until_seen(watcher(&first_watch));
            assert!(!watch_for_work(watcher(&second_watch), BRIEF));
            let got = tokio::time::timeout(LONG, reader).await.unwrap().unwrap();
            assert_eq!(got, b'x');
        });
    }
}
