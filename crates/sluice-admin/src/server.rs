//! The admin listener's thread, runtime and connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sluice_proxy::Control;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The running admin listener; dropping it stops it.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `listen` (errors come back here, before anything runs) and serves on a
    /// thread of its own.
    pub fn start(control: Arc<Control>, listen: SocketAddr) -> std::io::Result<AdminServer> {
        let socket = std::net::TcpListener::bind(listen)?;
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("sluice-admin".into())
            .spawn(move || runtime.block_on(serve(socket, control, stopped)))?;
        tracing::info!("admin API and dashboard on http://{addr}/");
        Ok(AdminServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    socket: std::net::TcpListener,
    control: Arc<Control>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match TcpListener::from_std(socket) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("admin listener: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let control = control.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| crate::api::handle(control.clone(), peer, req));
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), svc);
                        if let Err(e) = conn.await {
                            tracing::debug!(%peer, "admin connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::error!("admin accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = &mut stopped => return,
        }
    }
}
