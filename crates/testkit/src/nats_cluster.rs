//! A private 3-node (or n-node) NATS cluster with JetStream, for tests that kill cluster nodes.
//!
//! Each node is its own `nats-server` process on free loopback ports (one client port, one
//! route port), with its own store directory and log under one private directory of
//! [`std::env::temp_dir`], clustered with routes to every node as in the production example
//! `deploy/nats/cluster/node-*.conf` (same layout: `server_name`, `jetstream.store_dir`,
//! `cluster { name, listen, routes }`; without `sync_interval`, which 2.9 refuses).
//!
//! - [`NatsCluster::start`] returns once JetStream is usable on the whole cluster: a stream
//!   with one replica on every node can be created (so a meta leader exists and every node has
//!   joined);
//! - [`NatsCluster::kill`] SIGKILLs one node (a crash) and reaps it;
//! - [`NatsCluster::restart`] starts a killed node again with the same name, ports and store, so
//!   it rejoins and JetStream catches its replicas up, as after a real crash.
//!
//! Every process is killed and the directory removed when the value is dropped. The binary is
//! found as for [`NatsServer`](crate::NatsServer).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::nats_server::{find_binary, free_port, read_log};

/// How long a node may take to accept connections, and the cluster to offer JetStream.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// One node of a [`NatsCluster`].
#[derive(Debug)]
struct Node {
    /// `server_name`, unique in the cluster: what stream info calls the leader and the peers.
    name: String,
    client_port: u16,
    route_port: u16,
    child: Option<Child>,
}

/// A cluster of `nats-server -js` processes owned by one test.
#[derive(Debug)]
pub struct NatsCluster {
    binary: PathBuf,
    /// Private directory: per node `<name>.conf`, `<name>.log` and `<name>/` (its store).
    dir: PathBuf,
    cluster_name: String,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts `size` clustered nodes (3 for a real quorum) and returns once JetStream can place
    /// a stream with `size` replicas. Panics, with the nodes' logs, if that does not happen.
    pub async fn start(size: usize) -> Self {
        assert!(size >= 1, "a cluster needs at least one node");
        let suffix = crate::unique_suffix();
        let dir = std::env::temp_dir().join(format!("testkit-nats-cluster-{suffix}"));
        std::fs::create_dir_all(&dir).expect("create the cluster directory");
        let mut cluster = NatsCluster {
            binary: find_binary(),
            dir,
            cluster_name: format!("testkit-{suffix}"),
            nodes: (1..=size)
                .map(|i| Node {
                    name: format!("n{i}-{suffix}"),
                    client_port: 0,
                    route_port: 0,
                    child: None,
                })
                .collect(),
        };
        // Ports free a moment ago may be taken before a node binds them: retry on new ports.
        let mut failures = Vec::new();
        for _ in 0..3 {
            for node in &mut cluster.nodes {
                node.client_port = free_port();
                node.route_port = free_port();
            }
            match cluster.start_all().await {
                Ok(()) => return cluster,
                Err(failure) => {
                    failures.push(failure);
                    for i in 0..cluster.nodes.len() {
                        cluster.kill(i);
                    }
                }
            }
        }
        panic!(
            "the NATS cluster did not start:\n{}",
            failures.join("\n---\n")
        );
    }

    /// The number of nodes.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// `nats://127.0.0.1:<client port>` of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Every node's client URL, for a client that must survive the loss of any node.
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.url(i)).collect()
    }

    /// Node `i`'s `server_name`.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the node called `name` (a stream's `cluster.leader`, a peer's name).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// Whether node `i`'s process runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILLs node `i` (no graceful shutdown, like a crash) and reaps it. Does nothing if it
    /// is not running.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again (killing it first if it runs) with its name, ports and store, and
    /// returns once it accepts clients. It rejoins the cluster through its routes; whether its
    /// stream replicas caught up is the stream's business (see its cluster info).
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        if let Err(failure) = self.spawn(i).await {
            panic!(
                "NATS node {} did not restart: {failure}",
                self.nodes[i].name
            );
        }
    }

    async fn start_all(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.write_config(i);
        }
        // All nodes at once: a node waits for its routes, not for the others to be listening.
        for i in 0..self.nodes.len() {
            self.spawn_process(i);
        }
        for i in 0..self.nodes.len() {
            self.wait_listening(i).await?;
        }
        self.wait_jetstream().await
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.conf", self.nodes[i].name))
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", self.nodes[i].name))
    }

    /// The node's configuration, shaped like `deploy/nats/cluster/node-1.conf`.
    fn write_config(&self, i: usize) {
        let node = &self.nodes[i];
        let routes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("    nats-route://127.0.0.1:{}", n.route_port))
            .collect();
        let config = format!(
            "server_name: \"{name}\"\n\
             listen: \"127.0.0.1:{client}\"\n\
             jetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}\n\
             cluster {{\n  name: \"{cluster}\"\n  listen: \"127.0.0.1:{route}\"\n  routes: [\n{routes}\n  ]\n}}\n",
            name = node.name,
            client = node.client_port,
            store = self.dir.join(&node.name).display(),
            cluster = self.cluster_name,
            route = node.route_port,
            routes = routes.join("\n"),
        );
        std::fs::write(self.config_path(i), config).expect("write a node's configuration");
    }

    fn spawn_process(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("open a node's log");
        let log_err = log.try_clone().expect("clone a node's log handle");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.config_path(i))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        self.nodes[i].child = Some(child);
    }

    async fn spawn(&mut self, i: usize) -> Result<(), String> {
        self.spawn_process(i);
        self.wait_listening(i).await
    }

    /// Polls node `i`'s client port until it accepts a connection, within [`START_TIMEOUT`].
    async fn wait_listening(&mut self, i: usize) -> Result<(), String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.nodes[i].client_port));
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            let exited = match self.nodes[i].child.as_mut() {
                Some(child) => child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                self.nodes[i].child = None;
                return Err(format!(
                    "node {} exited during start ({status}); log:\n{}",
                    self.nodes[i].name,
                    read_log(&self.log_path(i))
                ));
            }
            let connect = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(_stream)) = tokio::time::timeout(POLL_INTERVAL, connect).await {
                return Ok(());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Err(format!(
            "node {} did not accept connections on {addr} within {START_TIMEOUT:?}; log:\n{}",
            self.nodes[i].name,
            read_log(&self.log_path(i))
        ))
    }

    /// Waits until a stream with one replica per node can be created (then deletes it): the
    /// meta group has a leader and every node has joined.
    async fn wait_jetstream(&self) -> Result<(), String> {
        let client = async_nats::ConnectOptions::new()
            .connect(self.url(0))
            .await
            .map_err(|e| format!("connect to {}: {e}", self.url(0)))?;
        let js = async_nats::jetstream::new(client);
        let probe = async_nats::jetstream::stream::Config {
            name: format!("TESTKIT_READY_{}", crate::unique_suffix()),
            subjects: vec![format!("testkit-ready.{}", crate::unique_suffix())],
            num_replicas: self.nodes.len(),
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        };
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut last_error = String::new();
        while tokio::time::Instant::now() < deadline {
            match js.create_stream(probe.clone()).await {
                Ok(_) => {
                    js.delete_stream(&probe.name)
                        .await
                        .map_err(|e| format!("delete the probe stream: {e}"))?;
                    return Ok(());
                }
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let logs: Vec<String> = (0..self.nodes.len())
            .map(|i| format!("{}:\n{}", self.nodes[i].name, read_log(&self.log_path(i))))
            .collect();
        Err(format!(
            "JetStream did not become available on the cluster within {START_TIMEOUT:?} \
             (last error: {last_error}); logs:\n{}",
            logs.join("\n")
        ))
    }

    /// The end of node `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        read_log(&self.log_path(i))
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
