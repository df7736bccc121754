//! Redis Cluster (3 masters, 3 replicas) and Sentinel (master, replica,
//! three sentinels) set-ups built from [`RedisNode`]s, stopped on drop.
//! Never talks to a gate.

use std::time::Duration;

use super::{RedisNode, free_port, wait_until};

/// A Redis Cluster of 3 masters and 3 replicas on loopback free ports
/// (node timeout 1 s, so a fail-over takes about 2 s), stopped on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisNode>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<RedisNode> = (0..6)
            .map(|i| {
                let bus = free_port().to_string();
                RedisNode::start_with(
                    free_port(),
                    &dir.path().join(format!("n{i}")),
                    &[
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-port",
                        &bus,
                        "--cluster-node-timeout",
                        "1000",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = super::tool("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes, _dir: dir };
        cluster.wait_healthy(Duration::from_secs(20));
        cluster
    }

    /// Waits until every running node says the cluster is ok, knows every
    /// node, and every replica is in sync.
    pub fn wait_healthy(&self, deadline: Duration) {
        wait_until("the cluster to be ok", deadline, || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                let repl = n.cli(&["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            })
        });
    }

    /// Seed URLs for the gate.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisNode::url).collect()
    }

    fn running(&self) -> &RedisNode {
        self.nodes.iter().find(|n| n.is_running()).unwrap()
    }

    /// `CLUSTER NODES`, one line each.
    pub fn topology(&self) -> Vec<ClusterNodeLine> {
        self.running()
            .cli(&["CLUSTER", "NODES"])
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let port = f
                    .get(1)?
                    .split('@')
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()?;
                let slots = f
                    .iter()
                    .skip(8)
                    .filter_map(|r| {
                        let (a, b) = r.split_once('-').unwrap_or((r, r));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                Some((
                    f[0].to_owned(),
                    port,
                    f.get(2)?.to_string(),
                    f.get(3)?.to_string(),
                    slots,
                ))
            })
            .collect()
    }

    /// The port of the master serving `key` (or channel) now.
    pub fn master_for(&self, key: &str) -> u16 {
        self.try_master_for(key)
            .expect("a master serves every slot")
    }

    /// The master serving `key`, if one does (none during a fail-over).
    pub fn try_master_for(&self, key: &str) -> Option<u16> {
        let slot: u16 = self
            .running()
            .cli(&["CLUSTER", "KEYSLOT", key])
            .parse()
            .unwrap();
        self.topology()
            .into_iter()
            .find(|(_, _, flags, _, slots)| {
                flags.contains("master")
                    && !flags.contains("fail")
                    && slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|n| n.1)
    }

    /// The port of a replica of the master on `port`.
    pub fn replica_of(&self, port: u16) -> u16 {
        let nodes = self.topology();
        let id = &nodes.iter().find(|n| n.1 == port).unwrap().0;
        nodes
            .iter()
            .find(|n| &n.3 == id && !n.2.contains("fail"))
            .map(|n| n.1)
            .expect("every master has a replica")
    }

    pub fn node(&mut self, port: u16) -> &mut RedisNode {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }
}

/// One line of `CLUSTER NODES`: id, port, flags, master id, slot ranges.
pub type ClusterNodeLine = (String, u16, String, String, Vec<(u16, u16)>);

/// A Sentinel set-up: a master, its replicas and three sentinels (quorum
/// 2, down after 1 s) on loopback free ports, stopped on drop.
pub struct RedisSentinel {
    pub master: RedisNode,
    pub replicas: Vec<RedisNode>,
    pub sentinels: Vec<RedisNode>,
    pub name: String,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// A master with one replica.
    pub fn start() -> Self {
        Self::with_replicas(1)
    }

    /// A master with `n` replicas (two keep `replica_acks = 1` answering
    /// through a killed master: the promoted replica still has one).
    pub fn with_replicas(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let plain = ["--save", "", "--appendonly", "no"];
        let master = RedisNode::start_with(free_port(), &dir.path().join("master"), &plain);
        let of = master.port.to_string();
        let mut args = plain.to_vec();
        args.extend(["--replicaof", "127.0.0.1", &of]);
        let replicas: Vec<RedisNode> = (0..n)
            .map(|i| {
                RedisNode::start_with(free_port(), &dir.path().join(format!("replica{i}")), &args)
            })
            .collect();
        wait_until("the replicas to sync", Duration::from_secs(10), || {
            replicas.iter().all(|r| {
                r.cli(&["INFO", "replication"])
                    .contains("master_link_status:up")
            })
        });
        let name = "hawzu-master".to_owned();
        let conf = format!(
            "sentinel monitor {name} 127.0.0.1 {of} 2\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 5000\n\
             sentinel parallel-syncs {name} 1\n"
        );
        let sentinels: Vec<RedisNode> = (0..3)
            .map(|i| RedisNode::sentinel(free_port(), &dir.path().join(format!("s{i}")), &conf))
            .collect();
        let set = Self {
            master,
            replicas,
            sentinels,
            name,
            _dir: dir,
        };
        set.wait_ready(Duration::from_secs(20));
        set
    }

    /// Waits until every sentinel knows the replicas and the other
    /// sentinels (a fail-over needs their votes).
    pub fn wait_ready(&self, deadline: Duration) {
        wait_until("the sentinels to know each other", deadline, || {
            self.sentinels.iter().all(|s| {
                let info = s.cli(&["SENTINEL", "MASTER", &self.name]);
                let field = |k: &str| {
                    let mut lines = info.lines();
                    while let Some(l) = lines.next() {
                        if l == k {
                            return lines.next().unwrap_or("").to_owned();
                        }
                    }
                    String::new()
                };
                field("num-slaves").parse::<usize>().unwrap_or(0) >= self.replicas.len()
                    && field("num-other-sentinels") == "2"
            })
        });
    }

    /// The data node (master or replica) on `port`.
    pub fn node(&mut self, port: u16) -> &mut RedisNode {
        std::iter::once(&mut self.master)
            .chain(self.replicas.iter_mut())
            .find(|n| n.port == port)
            .expect("a node of the set-up")
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisNode::url).collect()
    }

    /// The master's port as the sentinels see it.
    pub fn master_port(&self) -> Option<u16> {
        let out = self.sentinels[0].cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.name]);
        out.lines().nth(1)?.trim().parse().ok()
    }
}
