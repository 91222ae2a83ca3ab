//! A TCP proxy a test can cut and restore, to take a shared server (PostgreSQL, NATS) away from
//! the code under test without stopping it for every other test.
//!
//! [`TcpProxy::start`] listens on a free port of 127.0.0.1 and forwards every connection to
//! `upstream`. [`TcpProxy::cut`] closes every forwarded connection (both sides) and, until
//! [`TcpProxy::restore`], closes each new connection as soon as it is accepted, so the client
//! sees its connection attempts fail. [`TcpProxy::freeze`] is the silent kind of failure: every
//! connection stays open and nothing more is forwarded either way (a network partition, or a
//! peer whose process or machine froze). Point the code under test at [`TcpProxy::addr`].

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A cuttable TCP forwarder; stops (closing every connection) when dropped.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    /// `true` while connections are forwarded.
    open: watch::Sender<bool>,
    /// `true` once frozen: connections stay open, nothing is forwarded.
    frozen: watch::Sender<bool>,
    /// Forwarded connections alive right now.
    live: watch::Sender<usize>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on 127.0.0.1 (port chosen by the system) and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the proxy's port");
        let addr = listener.local_addr().expect("proxy address");
        let (open, _) = watch::channel(true);
        let (frozen, _) = watch::channel(false);
        let (live, _) = watch::channel(0usize);
        let accept = tokio::spawn(accept_loop(
            listener,
            upstream,
            open.clone(),
            frozen.clone(),
            live.clone(),
        ));
        TcpProxy {
            addr,
            upstream,
            open,
            frozen,
            live,
            accept,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Closes every forwarded connection and refuses new ones until [`restore`](Self::restore).
    /// Returns once every forwarded connection is closed.
    pub async fn cut(&self) {
        self.open.send_replace(false);
        let mut live = self.live.subscribe();
        live.wait_for(|n| *n == 0)
            .await
            .expect("the proxy owns the sender");
    }

    /// Stops forwarding anything, in both directions, on every connection, and keeps them all
    /// open; new connections are accepted and forward nothing either. Neither side sees an
    /// error: what it sent is lost, what it waits for never comes. Lasts until [`cut`](Self::cut)
    /// (which then closes them) or the proxy is dropped.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards new connections again (after [`cut`](Self::cut), which also ends a freeze).
    pub fn restore(&self) {
        self.frozen.send_replace(false);
        self.open.send_replace(true);
    }

    /// Whether connections are currently forwarded.
    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// How many forwarded connections are open right now.
    pub fn live_connections(&self) -> usize {
        *self.live.borrow()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Connection tasks end when they see the proxy closed.
        self.open.send_replace(false);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    open: watch::Sender<bool>,
    frozen: watch::Sender<bool>,
    live: watch::Sender<usize>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // e.g. out of file descriptors: let other tasks run, then try again.
            tokio::task::yield_now().await;
            continue;
        };
        let mut state = open.subscribe();
        if !*state.borrow_and_update() {
            refuse(client);
            continue;
        }
        let guard = Live::new(&live);
        let mut frozen = frozen.subscribe();
        tokio::spawn(async move {
            let _guard = guard;
            forward(client, upstream, &mut state, &mut frozen).await;
        });
    }
}

/// Closes an accepted connection at once with a reset (zero linger), so the client sees its
/// attempt fail like a refused connection rather than wait for a handshake.
fn refuse(client: TcpStream) {
    let _ = client.set_zero_linger();
    drop(client);
}

async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    state: &mut watch::Receiver<bool>,
    frozen: &mut watch::Receiver<bool>,
) {
    let connect = TcpStream::connect(upstream);
    let mut server = tokio::select! {
        server = connect => match server {
            Ok(server) => server,
            Err(_) => return,
        },
        _ = state.wait_for(|open| !*open) => return,
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    enum End {
        Closed,
        Cut,
        Frozen,
    }
    let end = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => End::Closed,
        _ = state.wait_for(|open| !*open) => End::Cut,
        _ = frozen.wait_for(|frozen| *frozen) => End::Frozen,
    };
    if let End::Frozen = end {
        // Hold both sockets, forward nothing, until cut.
        let _ = state.wait_for(|open| !*open).await;
    }
    if !matches!(end, End::Closed) {
        // The client sees a reset, as when the server's host goes away.
        let _ = client.set_zero_linger();
    }
}

/// Counts a forwarded connection while it lives.
struct Live(watch::Sender<usize>);

impl Live {
    fn new(live: &watch::Sender<usize>) -> Live {
        live.send_modify(|n| *n += 1);
        Live(live.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}
