//! An emulated array with sluice in front of it, in this process: the ground every lab
//! mode stands on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_admin::AdminServer;
use sluice_emulator::Array;
use sluice_exchange::{toml_string, ProbeTiming, Template};
use sluice_lab::client::{tls_connect, BoxError};
use sluice_lab::{Client, TestCert};
use sluice_proxy::{AccessLog, Proxy, ServerStatus};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::CertificateDer;

/// The name the lab's clients use for sluice (its certificate is made for it).
pub const NAMESPACE: &str = "localhost";

/// What a lab configuration is written for.
pub struct Setting<'a> {
    pub array: &'a Array,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// The admin token's file.
    pub token: PathBuf,
}

/// The loopback ports the lab's sluice listens on; 0 picks any free one.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub https: u16,
    pub http: u16,
    pub admin: u16,
}

impl Ports {
    pub const ANY: Ports = Ports {
        https: 0,
        http: 0,
        admin: 0,
    };
}

impl Setting<'_> {
    /// What `sluice init exchange` writes for these servers, pinning their certificates.
    pub fn exchange_template(&self, probe: ProbeTiming) -> Template {
        Template {
            namespace: NAMESPACE.into(),
            servers: self
                .array
                .servers
                .iter()
                .map(|s| (s.name().to_string(), s.addr))
                .collect(),
            version: self.array.oldest(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            fingerprints: self.array.fingerprints(),
            https_listen: self.https,
            http_listen: self.http,
            monitoring: vec!["127.0.0.0/8".into()],
            probe,
            admin_listen: self.admin,
            admin_token_file: Some(self.token.clone()),
            scenario: sluice_exchange::Scenario::Layer7,
            mail: Vec::new(),
        }
    }

    /// The embedded default configuration.
    pub fn default_config(&self, probe: ProbeTiming) -> Result<String, String> {
        sluice_exchange::render(&self.exchange_template(probe)).map_err(|e| e.to_string())
    }

    /// A configuration of the kind an administrator writes by hand: the `exchange` service
    /// (sluice's certificate) sending everything to one round-robin pool `pool` of every
    /// server, with the servers' certificates pinned and `health` as its `[pool.health]`.
    pub fn one_pool(&self, pool: &str, health: &str) -> String {
        let servers: Vec<String> = self
            .array
            .servers
            .iter()
            .map(|s| {
                format!(
                    "{{ name = {}, address = {} }}",
                    toml_string(s.name()),
                    toml_string(&s.addr.to_string())
                )
            })
            .collect();
        let pins: Vec<String> = self
            .array
            .fingerprints()
            .iter()
            .map(|f| toml_string(f))
            .collect();
        format!(
            "[[service]]\nname = \"exchange\"\nlisten = \"{https}\"\ndefault_pool = {pool}\n\
             [service.tls]\ncertificates = [{{ cert = {cert}, key = {key} }}]\n\
             [[pool]]\nname = {pool}\nservers = [{servers}]\n\
             [pool.health]\n{health}\n\
             [pool.tls]\nverify = \"fingerprint\"\nfingerprints = [{pins}]\n",
            https = self.https,
            pool = toml_string(pool),
            cert = toml_string(&self.cert.to_string_lossy()),
            key = toml_string(&self.key.to_string_lossy()),
            servers = servers.join(", "),
            pins = pins.join(", "),
        )
    }
}

/// 128 random bits, in hex.
fn random_token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // The system's random source does not fail on Linux; a zero token would still work.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sluice running in front of an emulated array.
pub struct Lab {
    pub array: Array,
    pub proxy: Proxy,
    /// The configuration sluice runs.
    pub config_path: PathBuf,
    /// Its services' names, in order.
    pub services: Vec<String>,
    /// sluice's own certificate, when the lab made it.
    pub cert: Option<(PathBuf, TestCert)>,
    /// The admin API, when the configuration has an `[admin]` table.
    pub admin: Option<AdminServer>,
    /// The directory holding the certificate and configuration the lab wrote; removed
    /// when the lab stops.
    files: Option<tempfile::TempDir>,
}

impl Lab {
    /// Writes sluice a certificate, an admin token and the configuration `config` makes
    /// for the array, then starts sluice with it on loopback `ports`.
    pub async fn start(
        array: Array,
        ports: Ports,
        config: impl FnOnce(&Setting) -> Result<String, String>,
        log: AccessLog,
    ) -> Result<Lab, String> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-lab-")
            .tempdir()
            .map_err(|e| format!("cannot make a directory for the lab: {e}"))?;
        let front = TestCert::new(&[NAMESPACE]);
        let (cert, key) = front.write(dir.path(), "sluice");
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let token = dir.path().join("admin.token");
        std::fs::write(&token, random_token()).map_err(|e| format!("{}: {e}", token.display()))?;
        let setting = Setting {
            array: &array,
            cert: cert.clone(),
            key,
            https: loopback(ports.https),
            http: loopback(ports.http),
            admin: loopback(ports.admin),
            token,
        };
        let text = config(&setting)?;
        let config_path = dir.path().join("sluice.toml");
        std::fs::write(&config_path, text)
            .map_err(|e| format!("{}: {e}", config_path.display()))?;
        let mut lab = Self::with_file(array, &config_path, log).await?;
        lab.cert = Some((cert, front));
        lab.files = Some(dir);
        Ok(lab)
    }

    /// Starts sluice with the administrator's own configuration.
    pub async fn with_file(array: Array, path: &Path, log: AccessLog) -> Result<Lab, String> {
        let config = sluice_config::load(path).map_err(|errors| errors.to_string())?;
        let services = config.services.iter().map(|s| s.name.to_string()).collect();
        let admin = config.admin.as_ref().map(|a| a.listen);
        let proxy = Proxy::start(config, log).await.map_err(|e| e.to_string())?;
        proxy.control().set_source(path.to_path_buf());
        let admin = admin
            .map(|listen| AdminServer::start(proxy.control(), listen))
            .transpose()
            .map_err(|e| {
                format!("admin API: cannot listen: {e} (choose another port with --admin-port)")
            })?;
        Ok(Lab {
            array,
            proxy,
            config_path: path.to_path_buf(),
            services,
            cert: None,
            admin,
            files: None,
        })
    }

    /// A file the lab wrote, by name.
    pub fn files_path(&self, name: &str) -> Option<PathBuf> {
        let path = self.files.as_ref()?.path().join(name);
        path.exists().then_some(path)
    }

    /// The admin API's address and token, when it runs with one.
    pub fn admin(&self) -> Option<(SocketAddr, String)> {
        let addr = self.admin.as_ref()?.addr();
        Some((addr, self.proxy.control().admin_token()?))
    }

    /// Where `service` listens (its first address).
    pub fn addr(&self, service: &str) -> Option<SocketAddr> {
        self.proxy.local_addrs(service).first().copied()
    }

    /// A new HTTPS connection to sluice's `exchange` service, trusting sluice's certificate.
    pub async fn client(&self) -> Result<Client, BoxError> {
        let (addr, cert) = self.front()?;
        Client::connect_tls(addr, NAMESPACE, cert).await
    }

    /// A TLS connection to the same, for requests written by hand.
    pub async fn raw(&self) -> Result<BufReader<TlsStream<TcpStream>>, BoxError> {
        let (addr, cert) = self.front()?;
        Ok(BufReader::new(tls_connect(addr, NAMESPACE, cert).await?))
    }

    fn front(&self) -> Result<(SocketAddr, CertificateDer<'static>), BoxError> {
        let addr = self
            .addr("exchange")
            .ok_or("no service named \"exchange\"")?;
        let (_, cert) = self
            .cert
            .as_ref()
            .ok_or("the lab did not make sluice's certificate")?;
        Ok((addr, cert.cert_der()))
    }

    pub fn status(&self, pool: &str, server: &str) -> Option<ServerStatus> {
        self.proxy
            .server_status()
            .into_iter()
            .find(|s| s.pool == pool && s.server == server)
    }

    /// Waits up to `limit` for `ready`, checking every 20 ms.
    pub async fn wait_for(&self, limit: Duration, ready: impl Fn(&Lab) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while !ready(self) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}
