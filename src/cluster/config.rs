//! `[cluster]`: how this node finds its peers, which consumer group it joins, and the key
//! nodes use to call each other. Without the section freshet runs as one full replica.

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, check_http_url};

/// The environment variable holding the shared key unless `cluster.key_env` names another.
pub const DEFAULT_KEY_ENV: &str = "FRESHET_CLUSTER_KEY";

/// Shortest shared key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// `[cluster]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Consumer group prefix: replica group `r` joins `<group>-r<r>`.
    pub group: String,
    /// Every node's base URL (this one included), e.g. `http://10.0.0.5:8080`.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Instead of `peers`: `host:port` whose name resolves to every node's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers_dns: Option<String>,
    /// Independent replica groups, each holding every partition once.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// The replica group this node belongs to, `0..replicas`.
    #[serde(default)]
    pub replica: u32,
    /// This node's base URL as the other nodes reach it.
    pub advertise_url: String,
    /// This node's name in answers and logs; default: `advertise_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Environment variable holding the key nodes authenticate internal calls with.
    #[serde(default = "default_key_env")]
    pub key_env: String,
    /// Kafka group protocol: `consumer` (KIP-848, Kafka ≥ 4.0) or `classic`.
    #[serde(default)]
    pub group_protocol: GroupProtocol,
    /// With `group_protocol = "classic"`: how long the broker waits for a silent member
    /// before reassigning its partitions (the consumer protocol's is the broker's
    /// `group.consumer.session.timeout.ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_timeout_ms: Option<u64>,
    /// How long a node keeps serving-ready state for partitions it lost before dropping
    /// them (a quick return of the partition then costs no replay).
    #[serde(default = "default_handoff_grace_ms")]
    pub handoff_grace_ms: u64,
    /// Bound of one internal call to a peer.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

/// `cluster.group_protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    /// KIP-848: the broker assigns, incrementally; no stop-the-world rebalance.
    #[default]
    Consumer,
    /// The classic protocol with the cooperative-sticky assignor.
    Classic,
}

fn default_replicas() -> u32 {
    1
}

fn default_key_env() -> String {
    DEFAULT_KEY_ENV.to_string()
}

fn default_handoff_grace_ms() -> u64 {
    30_000
}

fn default_request_timeout_ms() -> u64 {
    2_000
}

impl ClusterConfig {
    /// This node's name.
    pub fn node_id(&self) -> &str {
        self.node_id.as_deref().unwrap_or(&self.advertise_url)
    }

    /// The consumer group of this node's replica group.
    pub fn group_id(&self) -> String {
        format!("{}-r{}", self.group, self.replica)
    }

    /// The shared key from the environment (checked by [`Self::validate`]).
    pub fn key(&self) -> Option<String> {
        std::env::var(&self.key_env).ok()
    }

    /// Checks what types alone cannot, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let group = self.group.trim();
        if group.is_empty() || group.len() > 200 || group.chars().any(char::is_whitespace) {
            return Err(ConfigError::key(
                "cluster.group",
                "must be a non-empty consumer group name without spaces (at most 200 bytes)",
            ));
        }
        match (&self.peers_dns, self.peers.is_empty()) {
            (Some(_), false) => {
                return Err(ConfigError::key(
                    "cluster.peers_dns",
                    "give either cluster.peers or cluster.peers_dns, not both",
                ));
            }
            (None, true) => {
                return Err(ConfigError::key(
                    "cluster.peers",
                    "list every node's base URL (this one included), or set cluster.peers_dns",
                ));
            }
            (Some(dns), true) => {
                let port = dns
                    .rsplit_once(':')
                    .map(|(host, port)| (host, port.parse::<u16>()));
                if !matches!(port, Some((host, Ok(_))) if !host.is_empty()) {
                    return Err(ConfigError::key(
                        "cluster.peers_dns",
                        format!("`{dns}` must be host:port"),
                    ));
                }
            }
            (None, false) => {}
        }
        for (i, peer) in self.peers.iter().enumerate() {
            check_http_url(&format!("cluster.peers[{i}]"), peer)?;
        }
        check_http_url("cluster.advertise_url", &self.advertise_url)?;
        let own = self.advertise_url.trim_end_matches('/');
        if !self.peers.is_empty() && !self.peers.iter().any(|p| p.trim_end_matches('/') == own) {
            return Err(ConfigError::key(
                "cluster.advertise_url",
                format!("`{own}` is not one of cluster.peers; list this node there too"),
            ));
        }
        if !(1..=16).contains(&self.replicas) {
            return Err(ConfigError::key("cluster.replicas", "must be 1 to 16"));
        }
        if self.replica >= self.replicas {
            return Err(ConfigError::key(
                "cluster.replica",
                format!(
                    "must be below cluster.replicas ({}): replica groups are numbered from 0",
                    self.replicas
                ),
            ));
        }
        if self.session_timeout_ms.is_some() && self.group_protocol == GroupProtocol::Consumer {
            return Err(ConfigError::key(
                "cluster.session_timeout_ms",
                "only applies to group_protocol = \"classic\"; with the consumer protocol the \
                 broker's group.consumer.session.timeout.ms decides",
            ));
        }
        if self.request_timeout_ms < 10 {
            return Err(ConfigError::key(
                "cluster.request_timeout_ms",
                "must be at least 10",
            ));
        }
        match std::env::var(&self.key_env) {
            Ok(key) if key.len() >= MIN_KEY_BYTES => Ok(()),
            Ok(_) => Err(ConfigError::key(
                "cluster.key_env",
                format!(
                    "the key in ${} must be at least {MIN_KEY_BYTES} bytes",
                    self.key_env
                ),
            )),
            Err(_) => Err(ConfigError::key(
                "cluster.key_env",
                format!(
                    "environment variable {} is not set: internal calls between nodes need a shared key",
                    self.key_env
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    use crate::config::tests::MINIMAL as BASE;

    /// Set once for the whole test binary; every test here reads it.
    const KEY_VAR: &str = "FRESHET_TEST_CLUSTER_KEY_SET";

    fn parse(cluster: &str) -> Result<Config, String> {
        // SAFETY: the tests of this module all set the same value; nothing else reads it.
        unsafe { std::env::set_var(KEY_VAR, "0123456789abcdef0123") };
        let text = format!("{BASE}\n[cluster]\nkey_env = \"{KEY_VAR}\"\n{cluster}");
        Config::from_toml_with_env(&text, Path::new("t.toml"), Vec::new())
            .map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
group = "articles"
peers = ["http://127.0.0.1:8081", "http://127.0.0.1:8082"]
advertise_url = "http://127.0.0.1:8082/"
"#;

    #[test]
    fn absent_section_is_single_node() {
        let c = Config::from_toml_with_env(BASE, Path::new("t.toml"), Vec::new());
        assert!(c.is_ok_and(|c| c.cluster.is_none()));
    }

    #[test]
    fn a_complete_section_parses_with_defaults() {
        let c = parse(GOOD).expect("valid");
        let cluster = c.cluster.expect("present");
        assert_eq!(cluster.replicas, 1);
        assert_eq!(cluster.group_id(), "articles-r0");
        assert_eq!(cluster.node_id(), "http://127.0.0.1:8082/");
        assert_eq!(cluster.group_protocol, super::GroupProtocol::Consumer);
    }

    #[test]
    fn bad_sections_name_the_key() {
        let cases = [
            (
                GOOD.replace("group = \"articles\"", "group = \" \""),
                "cluster.group",
            ),
            (
                GOOD.replace(
                    "peers = [\"http://127.0.0.1:8081\", \"http://127.0.0.1:8082\"]",
                    "",
                ),
                "cluster.peers",
            ),
            (
                format!("{GOOD}peers_dns = \"freshet:8080\""),
                "cluster.peers_dns",
            ),
            (GOOD.replace("8081\"", "8081/x?y\""), "cluster.peers[0]"),
            (GOOD.replace("8082/\"", "8083\""), "cluster.advertise_url"),
            (format!("{GOOD}replicas = 0"), "cluster.replicas"),
            (
                format!("{GOOD}replicas = 2\nreplica = 2"),
                "cluster.replica",
            ),
            (
                format!("{GOOD}session_timeout_ms = 6000"),
                "cluster.session_timeout_ms",
            ),
            (
                format!("{GOOD}group_protocol = \"eager\""),
                "cluster.group_protocol",
            ),
            (format!("{GOOD}colour = 1"), "cluster"),
        ];
        for (text, key) in cases {
            let err = parse(&text).expect_err(key);
            assert!(err.starts_with(key), "{key}: {err}");
        }
    }

    #[test]
    fn dns_peers_need_a_port() {
        let dns = GOOD.replace(
            "peers = [\"http://127.0.0.1:8081\", \"http://127.0.0.1:8082\"]",
            "peers_dns = \"freshet.internal\"",
        );
        assert!(parse(&dns).is_err_and(|e| e.starts_with("cluster.peers_dns")));
        let dns = dns.replace("freshet.internal", "freshet.internal:8080");
        assert!(parse(&dns).is_ok());
    }

    #[test]
    fn the_key_must_be_set_and_long_enough() {
        let text = format!("{BASE}\n[cluster]\nkey_env = \"FRESHET_TEST_SURELY_UNSET\"\n{GOOD}");
        let err =
            Config::from_toml_with_env(&text, Path::new("t.toml"), Vec::new()).expect_err("no key");
        assert!(err.to_string().starts_with("cluster.key_env"), "{err}");
        assert!(
            err.to_string().contains("FRESHET_TEST_SURELY_UNSET"),
            "{err}"
        );
    }
}
