//! Layer 4 servers for the lab: an echo server (bulk transfer, half-close, PROXY
//! headers all come back to the client to check), a TLS server that names itself, and
//! small SMTP, IMAP and POP servers whose greeting can be made unhealthy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::backend::{listen, ServerTask};

/// A mail protocol the lab's mail servers speak (their greeting and a few commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mail {
    Smtp,
    Imap,
    Pop,
}

impl Mail {
    /// The greeting of a server that is ready.
    pub fn ready_greeting(self) -> &'static str {
        match self {
            Mail::Smtp => "220 mail.lab.example ESMTP ready",
            Mail::Imap => "* OK [CAPABILITY IMAP4rev1] ready",
            Mail::Pop => "+OK POP3 ready",
        }
    }

    /// What each answers a command with; `None` closes the connection after the answer.
    fn answer(self, command: &str) -> (String, bool) {
        let upper = command.to_ascii_uppercase();
        match self {
            Mail::Smtp if upper.starts_with("EHLO") => (
                "250-mail.lab.example\r\n250-SIZE 37748736\r\n250 8BITMIME".into(),
                true,
            ),
            Mail::Smtp if upper.starts_with("QUIT") => ("221 2.0.0 Bye".into(), false),
            Mail::Smtp => ("500 5.3.3 Unrecognized command".into(), true),
            Mail::Imap if upper.contains("LOGOUT") => {
                let tag = command.split(' ').next().unwrap_or("*");
                (
                    format!("* BYE logging out\r\n{tag} OK LOGOUT completed"),
                    false,
                )
            }
            Mail::Imap => ("* BAD unknown command".into(), true),
            Mail::Pop if upper.starts_with("QUIT") => ("+OK bye".into(), false),
            Mail::Pop => ("-ERR unknown command".into(), true),
        }
    }
}

#[derive(Clone)]
enum Behaviour {
    /// Sends back every byte; shuts its sending side when the client shuts its own.
    Echo,
    /// Completes a TLS handshake, writes `hello from NAME\n`, then echoes.
    Tls { acceptor: TlsAcceptor, name: String },
    /// Greets, then answers commands line by line.
    Mail { protocol: Mail, greeting: String },
}

/// A TCP server on an ephemeral loopback port that can be stopped as if it died.
pub struct TcpServer {
    addr: SocketAddr,
    behaviour: Behaviour,
    connections: Arc<AtomicU64>,
    task: ServerTask,
}

impl TcpServer {
    pub async fn echo() -> TcpServer {
        Self::start(Behaviour::Echo)
    }

    /// Presents `config`'s certificate and names itself `name` once the handshake is done.
    pub async fn tls(name: &str, config: Arc<rustls::ServerConfig>) -> TcpServer {
        Self::start(Behaviour::Tls {
            acceptor: TlsAcceptor::from(config),
            name: name.to_string(),
        })
    }

    /// A mail server greeting with `greeting` (e.g. `protocol.ready_greeting()`, or an
    /// unhealthy `554 5.3.2 Service not available`).
    pub async fn mail(protocol: Mail, greeting: &str) -> TcpServer {
        Self::start(Behaviour::Mail {
            protocol,
            greeting: greeting.to_string(),
        })
    }

    fn start(behaviour: Behaviour) -> TcpServer {
        let listener = listen("127.0.0.1:0".parse().unwrap()).expect("bind a loopback port");
        let server = TcpServer {
            addr: listener.local_addr().expect("bound address"),
            behaviour,
            connections: Arc::default(),
            task: ServerTask::default(),
        };
        server.spawn(listener);
        server
    }

    fn spawn(&self, listener: TcpListener) {
        let behaviour = self.behaviour.clone();
        self.task
            .accept(listener, self.connections.clone(), move |tcp| {
                serve(tcp, behaviour.clone())
            });
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Closes the listener and every open connection, as if the server died.
    pub async fn stop(&self) {
        self.task.stop().await;
    }

    /// Listens again on the same port.
    pub async fn restart(&self) {
        self.stop().await;
        self.spawn(listen(self.addr).expect("rebind the same port"));
    }
}

async fn serve(tcp: TcpStream, behaviour: Behaviour) {
    let _ = tcp.set_nodelay(true);
    match behaviour {
        Behaviour::Echo => echo(tcp).await,
        Behaviour::Tls { acceptor, name } => {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            if tls
                .write_all(format!("hello from {name}\n").as_bytes())
                .await
                .is_ok()
            {
                echo(tls).await;
            }
        }
        Behaviour::Mail { protocol, greeting } => converse(tcp, protocol, &greeting).await,
    }
}

/// Copies everything back; the client's end of stream becomes ours.
async fn echo<S: AsyncRead + AsyncWrite>(stream: S) {
    let (mut read, mut write) = tokio::io::split(stream);
    if tokio::io::copy(&mut read, &mut write).await.is_ok() {
        let _ = write.shutdown().await;
    }
}

async fn converse(tcp: TcpStream, protocol: Mail, greeting: &str) {
    let mut stream = BufReader::new(tcp);
    if reply(&mut stream, greeting).await.is_err() || !greeting_is_ready(protocol, greeting) {
        return;
    }
    let mut line = String::new();
    // A bounded number of commands: the lab's clients say a few words and leave.
    for _ in 0..100 {
        line.clear();
        match stream.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (answer, go_on) = protocol.answer(line.trim_end());
        if reply(&mut stream, &answer).await.is_err() || !go_on {
            return;
        }
    }
}

fn greeting_is_ready(protocol: Mail, greeting: &str) -> bool {
    greeting == protocol.ready_greeting()
}

async fn reply(stream: &mut BufReader<TcpStream>, text: &str) -> std::io::Result<()> {
    let out = stream.get_mut();
    out.write_all(format!("{text}\r\n").as_bytes()).await?;
    out.flush().await
}
