//! The `[listen]` and `[tls]` sections: where each listener binds, and the
//! certificate each may serve. Owns the addresses, their defaults and the
//! check that listeners do not collide; it must never bind or read a
//! certificate (the server and `crate::tls` do).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

/// Where each listener binds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Reverse proxy in front of `upstream.url`.
    #[serde(deserialize_with = "socket_addr")]
    pub proxy: SocketAddr,
    /// Forward-auth endpoints (`/auth/nginx`, `/auth/traefik`, `/envoy/…`).
    #[serde(deserialize_with = "socket_addr")]
    pub auth: SocketAddr,
    /// Envoy ext_authz gRPC.
    #[serde(deserialize_with = "socket_addr")]
    pub grpc: SocketAddr,
    /// Token management API.
    #[serde(deserialize_with = "socket_addr")]
    pub admin: SocketAddr,
    /// Metrics, liveness and readiness.
    #[serde(deserialize_with = "socket_addr")]
    pub ops: SocketAddr,
    /// Leaked-token reports (GitHub secret scanning, the public report
    /// door): meant to be reachable from the internet. Off unless set.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub leaks: Option<SocketAddr>,
}

impl Listen {
    /// Every listener with its key, for messages and checks (the leaks
    /// listener only when set).
    pub fn all(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut all = vec![
            ("listen.proxy", self.proxy),
            ("listen.auth", self.auth),
            ("listen.grpc", self.grpc),
            ("listen.admin", self.admin),
            ("listen.ops", self.ops),
        ];
        all.extend(self.leaks.map(|a| ("listen.leaks", a)));
        all
    }

    /// A warning when the admin listener is reachable off this host
    /// without TLS: the admin key, token callers' tokens and a console
    /// sign-in would cross the network in the clear.
    pub(crate) fn admin_in_the_clear(&self, tls: bool) -> Option<String> {
        (!tls && !self.admin.ip().is_loopback()).then(|| {
            format!(
                "listen.admin is {} without tls.admin: the admin key, token callers' tokens and console sign-ins cross the network in the clear; set tls.admin (or keep the admin API on loopback and reach it with a port-forward)",
                self.admin
            )
        })
    }

    /// Checks that listeners do not share an address; `invalid(key,
    /// message)` builds the error naming the key at fault.
    pub(crate) fn validate<E>(&self, invalid: impl Fn(&str, String) -> E) -> Result<(), E> {
        if let Some(leaks) = self.leaks
            && leaks.port() != 0
            && let Some((key, _)) = self
                .all()
                .into_iter()
                .find(|&(k, a)| k != "listen.leaks" && a == leaks)
        {
            // The admin API must never be reachable where reports are.
            return Err(invalid(
                "listen.leaks",
                format!("{leaks} is also {key}; the leaks listener needs its own address"),
            ));
        }
        if self.auth == self.admin && self.auth.port() != 0 {
            return Err(invalid(
                "listen.admin",
                format!(
                    "{} is also listen.auth; give each listener its own address",
                    self.admin
                ),
            ));
        }
        Ok(())
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            proxy: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth: SocketAddr::from(([127, 0, 0, 1], 8081)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 9001)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9091)),
            ops: SocketAddr::from(([127, 0, 0, 1], 9090)),
            leaks: None,
        }
    }
}

/// An `IP:port` address, with a message that shows the accepted form.
fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "`{s}` is not an IP:port address; write it like 127.0.0.1:8081 or [::]:8081"
        ))
    })
}

/// An optional `IP:port` address: empty or absent is off.
fn optional_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{s}` is not an IP:port address; write it like 0.0.0.0:8443 or [::]:8443"
            ))
        }),
    }
}

/// TLS per listener; a listener without an entry is plain TCP. Certificates
/// are read again on SIGHUP and when their files change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    pub proxy: Option<ListenerTls>,
    pub auth: Option<ListenerTls>,
    pub grpc: Option<ListenerTls>,
    pub admin: Option<ListenerTls>,
    pub ops: Option<ListenerTls>,
    pub leaks: Option<ListenerTls>,
}

/// Certificate and key of one listener (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA (mTLS).
    pub client_ca_file: Option<PathBuf>,
}
