//! Serving helpers: binding, reflection, the stop signal, logging (the runner is [`crate::app`]).

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binds the listen address (port 0 picks a free port: tests do that).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// The services every gRPC port serves next to its own: health and reflection (both versions).
pub const INFRASTRUCTURE_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// A reflection builder that knows every message of the API and lists only `services`, health
/// and reflection: `ListServices` on a port answers what that port serves.
fn reflection(services: &[String]) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for name in services
        .iter()
        .map(String::as_str)
        .chain(INFRASTRUCTURE_SERVICES)
    {
        builder = builder.with_service_name(name);
    }
    builder
}

/// Server reflection v1 (grpcurl ≥ 1.9, current clients) for a port serving `services`.
pub fn reflection_v1(
    services: &[String],
) -> tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer<
    impl tonic_reflection::pb::v1::server_reflection_server::ServerReflection,
> {
    match reflection(services).build_v1() {
        Ok(server) => server,
        // The descriptor sets are generated at build time; a test builds them.
        Err(e) => panic!("invalid descriptor sets: {e}"),
    }
}

/// Server reflection v1alpha (grpcurl < 1.9, Python's grpcio-reflection) for a port serving
/// `services`.
pub fn reflection_v1alpha(
    services: &[String],
) -> tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflectionServer<
    impl tonic_reflection::pb::v1alpha::server_reflection_server::ServerReflection,
> {
    match reflection(services).build_v1alpha() {
        Ok(server) => server,
        Err(e) => panic!("invalid descriptor sets: {e}"),
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

/// The skeleton of a binary with subcommands: `-h`/`--help` prints `usage`; arguments `parse`
/// refuses exit 2 with the reason and the usage; then tracing, `run`, and its exit code (an
/// error is printed with its causes, exit 1).
pub async fn command_line<C, E, Fut>(
    name: &str,
    usage: &str,
    parse: impl FnOnce(&[String]) -> Result<C, E>,
    run: impl FnOnce(C) -> Fut,
) -> std::process::ExitCode
where
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<std::process::ExitCode, E>>,
{
    use std::process::ExitCode;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{usage}");
        return ExitCode::SUCCESS;
    }
    let command = match parse(&args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("{name}: {e:#}\n\n{usage}");
            return ExitCode::from(2);
        }
    };
    init_tracing();
    match run(command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
