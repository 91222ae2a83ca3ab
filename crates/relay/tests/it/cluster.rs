//! Fault campaign: the relay publishing into a stream with 3 replicas on a real 3-node NATS
//! cluster (three `nats-server` processes, `testkit::NatsCluster`) while writers append, with
//! the stream's leader killed (SIGKILL) and restarted, then a follower killed and restarted.
//!
//! What it proves: publication goes on while one node of three is down (a majority still
//! acknowledges), the relay resumes by itself after the leader's loss (it resyncs from the new
//! leader's view of the stream), and the stream ends up holding every event of the log exactly
//! once, in position order — read back through a client of a node that was never killed, and
//! again with the restarted node as the stream's leader (so its replica is complete too).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use eventlog::EventLog;
use relay::RelayConfig;
use testkit::NatsCluster;
use tokio::task::JoinHandle;

use crate::support::{self, Running, WAIT};

/// Writers appending dossiers (two events each) until stopped.
struct Writers {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<usize>>,
}

impl Writers {
    fn start(log: &EventLog, count: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..count)
            .map(|w| {
                let log = log.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let routing = support::routing("district", "000.00.12.H40", "land");
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let id = format!("w{w}-{n}");
                        support::append(&log, &id, &routing, 0, &["received", "processing"]).await;
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        Writers { stop, handles }
    }

    /// Stops the writers and returns how many dossiers they appended.
    async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for handle in self.handles {
            total += handle.await.expect("writer task");
        }
        total
    }
}

/// A client that knows every node and reconnects quickly to whichever is up.
async fn connect_to_all(cluster: &NatsCluster) -> async_nats::Client {
    let addrs: Vec<async_nats::ServerAddr> = cluster
        .urls()
        .iter()
        .map(|url| url.parse().expect("server address"))
        .collect();
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(addrs)
        .await
        .expect("connect to the cluster")
}

/// The stream's cluster info once it has a leader (during an election there is none, and the
/// API may time out: poll).
async fn cluster_info(js: &jetstream::Context, stream: &str) -> jetstream::stream::ClusterInfo {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(mut s) = js.get_stream(stream).await
            && let Ok(info) = s.info().await
            && let Some(cluster) = info.cluster.clone()
            && cluster.leader.is_some()
        {
            return cluster;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream {stream} has no leader within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The index of the node leading the stream.
async fn leader(cluster: &NatsCluster, js: &jetstream::Context, stream: &str) -> usize {
    let info = cluster_info(js, stream).await;
    let name = info.leader.expect("a leader");
    cluster
        .index_of(&name)
        .unwrap_or_else(|| panic!("leader {name} is not a node of the cluster"))
}

/// Waits until the stream has a leader and both other replicas are online and current.
async fn replicas_current(js: &jetstream::Context, stream: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = cluster_info(js, stream).await;
        if info.replicas.len() == 2 && info.replicas.iter().all(|p| p.current && !p.offline) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replicas of {stream} are not all current within {WAIT:?}: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks the stream's leader to step down until node `target` leads (the new leader is chosen
/// among the current replicas by the server; a few attempts suffice).
async fn make_leader(
    cluster: &NatsCluster,
    client: &async_nats::Client,
    js: &jetstream::Context,
    stream: &str,
    target: usize,
) {
    for _ in 0..20 {
        let now = leader(cluster, js, stream).await;
        if now == target {
            return;
        }
        let _ = client
            .request(
                format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                "".into(),
            )
            .await;
        // Wait for the election to end with another leader.
        let deadline = tokio::time::Instant::now() + WAIT;
        while leader(cluster, js, stream).await == now {
            assert!(
                tokio::time::Instant::now() < deadline,
                "stream {stream}: leader {now} did not step down"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        replicas_current(js, stream).await;
    }
    panic!("node {target} never became the leader of {stream} after 20 step-downs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_loses_leader_then_follower_under_load() {
    let mut cluster = NatsCluster::start(3).await;
    let (_db, log) = support::log().await;
    let suffix = testkit::unique_suffix();
    let cfg = RelayConfig {
        replicas: 3,
        ..support::config(&format!("C_{suffix}"), &format!("c{suffix}.dossier"))
    };
    let client = connect_to_all(&cluster).await;
    let js = jetstream::new(client.clone());
    let mut relay = Running::start(&log, js.clone(), cfg.clone());
    let writers = Writers::start(&log, 4);

    // Under way: some events published with all three nodes up.
    relay.published(100).await;
    replicas_current(&js, &cfg.stream).await;

    // 1. Kill the stream's leader. Writers go on; the relay must publish past what the log
    //    held at the kill, with a new leader elected among the two survivors.
    let first = leader(&cluster, &js, &cfg.stream).await;
    cluster.kill(first);
    let head_at_kill = log.head().await.expect("head");
    relay.published(head_at_kill + 100).await;
    let second = leader(&cluster, &js, &cfg.stream).await;
    assert_ne!(second, first, "a killed node cannot lead");
    cluster.restart(first).await;
    replicas_current(&js, &cfg.stream).await;

    // 2. Kill a follower: neither the restarted node nor the leader. Publication goes on.
    let leader_now = leader(&cluster, &js, &cfg.stream).await;
    let follower = (0..3)
        .find(|i| *i != first && *i != leader_now)
        .expect("a third node");
    cluster.kill(follower);
    let head_at_kill = log.head().await.expect("head");
    relay.published(head_at_kill + 100).await;
    cluster.restart(follower).await;
    replicas_current(&js, &cfg.stream).await;

    let dossiers = writers.stop().await;
    let head = log.head().await.expect("head");
    assert_eq!(head, dossiers as i64 * 2, "every append is in the log");
    relay.published(head).await;

    // 3. Read back through a node that was never killed: every event once, in order.
    let survivor = (0..3)
        .find(|i| *i != first && *i != follower)
        .expect("a node never killed");
    let reader = async_nats::connect(cluster.url(survivor))
        .await
        .expect("connect to the surviving node");
    let reader_js = jetstream::new(reader.clone());
    support::assert_stream_is_log(&reader_js, &cfg, &log).await;

    // 4. The same with the restarted former leader leading: its replica is complete.
    make_leader(&cluster, &reader, &reader_js, &cfg.stream, first).await;
    support::assert_stream_is_log(&reader_js, &cfg, &log).await;

    relay
        .stop()
        .await
        .expect("the relay never stopped on an error");
}
