//! Serving: gRPC health and reflection next to the service, graceful shutdown, logging.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::transport::Server;

/// Binds the listen address (port 0 picks a free port: tests do that).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves `service` with gRPC health (reporting it SERVING while up) and server reflection
/// (so generic clients like grpcurl can list and call it), until `shutdown` is cancelled; then
/// stops accepting, lets in-flight calls finish for up to `drain`, and returns.
pub async fn serve<S>(
    service: S,
    listener: TcpListener,
    shutdown: CancellationToken,
    drain: Duration,
) -> Result<(), tonic::transport::Error>
where
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (_always, input) = tokio::sync::watch::channel(());
    serve_with_health(service, listener, shutdown, drain, input, |_| true).await
}

/// [`serve`], with the health of `service` following its input: SERVING while `serving` holds
/// for the latest value of `input`, NOT_SERVING otherwise (e.g. the projection while a dossier
/// fails to apply), and NOT_SERVING once stopping.
pub async fn serve_with_health<S, T>(
    service: S,
    listener: TcpListener,
    shutdown: CancellationToken,
    drain: Duration,
    mut input: tokio::sync::watch::Receiver<T>,
    serving: fn(&T) -> bool,
) -> Result<(), tonic::transport::Error>
where
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    T: Send + Sync + 'static,
{
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    async fn report<S: NamedService>(reporter: &tonic_health::server::HealthReporter, up: bool) {
        if up {
            reporter.set_serving::<S>().await;
        } else {
            reporter.set_not_serving::<S>().await;
        }
    }
    let up = serving(&input.borrow_and_update());
    report::<S>(&health_reporter, up).await;
    let follower = {
        let reporter = health_reporter.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = input.changed() => if changed.is_err() {
                        // The input's sender is gone: its last value stands.
                        return;
                    },
                }
                let up = serving(&input.borrow_and_update());
                report::<S>(&reporter, up).await;
            }
        })
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the descriptor sets are generated at build time and valid");

    let stopping = shutdown.clone();
    let server = Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            stopping.cancelled().await;
            follower.abort();
            health_reporter.set_not_serving::<S>().await;
            tracing::info!("shutting down: no new calls accepted, draining");
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
            tracing::warn!(?drain, "drain timeout passed; stopping with calls in flight");
            Ok(())
        }
    }
}

/// Cancels the returned token on SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            () = term => {},
        }
        tracing::info!("stop signal received");
        cancel.cancel();
    });
    token
}

/// Structured logs to stderr: JSON when `MOTCUA_LOG_FORMAT=json`, else human-readable;
/// the filter from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if std::env::var("MOTCUA_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests starting several services in one process) keeps the first.
    drop(result);
}
