//! `sluice` processes for tests: `sluice run` with its standard error collected line by
//! line, so a test can wait for what it reports (addresses, log lines) with a bound, and
//! a bounded wait for any child to exit.

#![allow(dead_code)]

pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

pub struct Sluice {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Sluice {
    /// `sluice run --config FILE`.
    pub fn run(config: &Path) -> Sluice {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("SLUICE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sluice starts");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Sluice { child, lines }
    }

    /// The first line containing `text`, waiting up to `limit` for it.
    pub fn wait_line(&self, text: &str, limit: Duration) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(text))
                .cloned();
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The address logged after `marker` (e.g. `listening on `).
    pub fn logged_addr(&self, marker: &str) -> SocketAddr {
        let line = self
            .wait_line(marker, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("sluice never logged {marker:?}: {:?}", self.lines()));
        let rest = line.split(marker).nth(1).unwrap();
        let addr: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        addr.parse()
            .unwrap_or_else(|_| panic!("no address in {line:?}"))
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Where `sluice run` listens (its first listener).
    pub fn listening(&self) -> SocketAddr {
        self.logged_addr("listening on ")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sends a signal to our own child process.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Kilobytes of (`VmRSS`, `VmHWM`) from /proc.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, limit)
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's exit status, or `None` (and the child killed) if it runs past `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

/// `sluice ctl ARGS...`: (exit code, stdout, stderr).
pub fn ctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).arg("ctl").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two pools standing for two Exchange workloads, each with servers cas1 and cas2 at
/// the given addresses, checked every 100 ms; an admin listener with `token_file`.
pub fn two_workloads(owa: [SocketAddr; 2], ews: [SocketAddr; 2], token_file: &Path) -> String {
    let pool = |name: &str, path: &str, [a, b]: [SocketAddr; 2]| {
        format!(
            "[[pool]]\nname = \"{name}\"\n\
             servers = [{{ name = \"cas1\", address = \"{a}\" }}, {{ name = \"cas2\", address = \"{b}\" }}]\n\
             [pool.health]\nkind = \"tcp\"\ninterval = \"100ms\"\nfall = 1\nrise = 1\n\
             # {path}\n"
        )
    };
    // One traffic thread, the current-thread runtime (`sluice run` otherwise runs one
    // per CPU): reloads and the admin API are tested on it.
    format!(
        "[global]\naccess_log = false\nworkers = 1\n\
         [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\
         [[service]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\ndefault_pool = \"owa\"\n\
         [[service.route]]\nname = \"ews\"\nmatch = {{ path_prefix = \"/ews/\" }}\npool = \"ews\"\n\
         {}{}",
        token_file.display(),
        pool("owa", "/owa", owa),
        pool("ews", "/EWS", ews),
    )
}
