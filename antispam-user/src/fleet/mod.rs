//! The fleet store: Redis (or Valkey, which speaks its protocol), shared by every host of a
//! fleet. It holds what no single host can: each tenant's fleet-wide bucket, from which hosts
//! lease tokens ([`Store::lease_all`]: one atomic script per tenant, all of a renewal's in one
//! round trip), and the hosts'
//! audit heads ([`Store::checkpoint`]), so that a log cut or rewritten on one host after a
//! checkpoint is caught by `antispam audit verify --checkpoints`.
//!
//! Nothing on the kernel path waits for it: the agent renews leases in the background, and a
//! host that cannot reach the store falls back to each tenant's `local_rate` when its lease
//! ends (the kernel does that by itself).
//!
//! Keys (the tenant in a hash tag, so a cluster keeps one tenant's keys in one slot):
//! `antispam:{TENANT}:bucket`, `antispam:{TENANT}:demand`, and the stream
//! `antispam:audit:HOST`.

use std::{path::PathBuf, time::Duration};

use redis::{aio::MultiplexedConnection, AsyncCommands as _};

/// The lease script (see the comments in it).
const LEASE_LUA: &str = include_str!("lease.lua");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("fleet store {url}: {source}")]
    Redis {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("fleet store {url}: no answer within {}ms", .after.as_millis())]
    Timeout { url: String, after: Duration },
    #[error("fleet store: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("fleet store {url}: unexpected answer: {what}")]
    Reply { url: String, what: String },
}

/// How to reach the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `redis://[user@]host:port[/db]` or `rediss://…` (TLS). A password in the URL is
    /// accepted, but one in `password_file` keeps it out of `ps` and unit files.
    pub url: String,
    /// PEM file of the CA that signed the store's certificate (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// A file holding the AUTH password (first line).
    pub password_file: Option<PathBuf>,
}

impl StoreConfig {
    /// The URL without any password in it, for logs, status and errors.
    pub fn redacted(&self) -> String {
        match redis::parse_redis_url(&self.url) {
            Some(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            Some(u) => u.to_string(),
            None => "<not a redis:// or rediss:// URL>".to_string(),
        }
    }

    fn client(&self) -> Result<redis::Client, Error> {
        let url = self.redacted();
        let redis_err = |source| Error::Redis {
            url: url.clone(),
            source,
        };
        let mut info = redis::IntoConnectionInfo::into_connection_info(self.url.as_str())
            .map_err(redis_err)?;
        if let Some(file) = &self.password_file {
            let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
                what: format!("reading the password file {}", file.display()),
                source,
            })?;
            let password = text.lines().next().unwrap_or("").trim_end().to_string();
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        match &self.ca {
            None => redis::Client::open(info).map_err(redis_err),
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|source| Error::Io {
                    what: format!("reading the CA file {}", ca.display()),
                    source,
                })?;
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
                .map_err(redis_err)
            }
        }
    }
}

/// A host's share of a tenant's fleet budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Tokens this host may spend until its lease ends.
    pub tokens: u64,
    /// Tokens left in the fleet's bucket after this grant.
    pub left: u64,
}

/// What a host asks for one tenant.
#[derive(Debug, Clone, Copy)]
pub struct LeaseRequest<'a> {
    pub tenant: &'a str,
    pub host: &'a str,
    /// Tokens it expects to need before its next renewal.
    pub want: u64,
    /// The fleet's rate, in tokens per second, and its burst.
    pub rate_per_sec: f64,
    pub burst: u64,
    /// Lease length: demand older than this no longer counts.
    pub lease: Duration,
}

/// One audit head, as a host appended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The stream entry id (server milliseconds and a sequence).
    pub id: String,
    pub host: String,
    pub seq: u64,
    pub hash: String,
    /// When the host wrote it, its own clock, RFC 3339.
    pub time: String,
}

/// The store, connected on first use and again after any error (each call is bounded by the
/// timeout).
pub struct Store {
    url: String,
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    timeout: Duration,
    script: redis::Script,
}

impl Store {
    pub fn new(config: StoreConfig, timeout: Duration) -> Result<Store, Error> {
        // rustls needs its crypto provider chosen once per process (an error only means one
        // is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = config.client()?;
        Ok(Store {
            url: config.redacted(),
            client,
            conn: None,
            timeout,
            script: redis::Script::new(LEASE_LUA),
        })
    }

    /// Is a connection open (as far as this side knows)?
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Runs `f` on the connection (made first if there is none) within the timeout; any error
    /// drops the connection, so the next call starts afresh. `f` is told whether the connection
    /// is new (the lease script is then loaded again: a restarted store has forgotten it).
    async fn bounded<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut MultiplexedConnection, bool) -> redis::RedisResult<T>,
    ) -> Result<T, Error> {
        let timeout = self.timeout;
        let url = self.url.clone();
        let attempt = async {
            let fresh = self.conn.is_none();
            if fresh {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                self.conn = Some(
                    self.client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                );
            }
            let conn = self.conn.as_mut().expect("connected above");
            f(conn, fresh).await
        };
        let result = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(Error::Redis { url, source }),
            Err(_) => Err(Error::Timeout {
                url,
                after: timeout,
            }),
        };
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Leases this host's share of each request's tenant budget: every tenant in one round trip
    /// (a pipeline of the lease script, each run atomic on the server).
    pub async fn lease_all(&mut self, reqs: &[LeaseRequest<'_>]) -> Result<Vec<Grant>, Error> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let script = self.script.clone();
        let sha = script.get_hash().to_string();
        let mut pipe = redis::pipe();
        for r in reqs {
            pipe.cmd("EVALSHA")
                .arg(&sha)
                .arg(2)
                .arg(format!("antispam:{{{}}}:bucket", r.tenant))
                .arg(format!("antispam:{{{}}}:demand", r.tenant))
                .arg(r.host)
                .arg(r.want)
                // Tokens per millisecond, in full precision (1/day is about 1.16e-8).
                .arg(format!("{:e}", r.rate_per_sec / 1000.0))
                .arg(r.burst)
                .arg(r.lease.as_millis() as u64);
        }
        let replies: Vec<Vec<i64>> = self
            .bounded(async |c, fresh| {
                if fresh {
                    script.load_async(c).await?;
                }
                pipe.query_async(c).await
            })
            .await?;
        if replies.len() != reqs.len() {
            return Err(Error::Reply {
                url: self.url.clone(),
                what: format!("{} answers to {} lease scripts", replies.len(), reqs.len()),
            });
        }
        replies
            .iter()
            .map(|reply| match reply.as_slice() {
                [tokens, left, _now] if *tokens >= 0 && *left >= 0 => Ok(Grant {
                    tokens: *tokens as u64,
                    left: *left as u64,
                }),
                other => Err(Error::Reply {
                    url: self.url.clone(),
                    what: format!("lease script returned {other:?}"),
                }),
            })
            .collect()
    }

    /// Appends an audit head to the host's checkpoint stream.
    pub async fn checkpoint(&mut self, host: &str, seq: u64, hash: &str) -> Result<(), Error> {
        let key = checkpoint_key(host);
        let time = crate::clock::rfc3339(std::time::SystemTime::now());
        let seq = seq.to_string();
        let fields = [
            ("host", host),
            ("seq", seq.as_str()),
            ("hash", hash),
            ("time", time.as_str()),
        ];
        // No MAXLEN: whoever can append could then trim the stream too. Old entries are the
        // operator's to trim (XTRIM MINID, from an account of their own: docs/fleet.md).
        let _: String = self
            .bounded(async |c, _| c.xadd(&key, "*", &fields).await)
            .await?;
        Ok(())
    }

    /// Every checkpoint of `host` the stream holds, oldest first.
    pub async fn checkpoints(&mut self, host: &str) -> Result<Vec<Checkpoint>, Error> {
        let key = checkpoint_key(host);
        let reply: redis::streams::StreamRangeReply =
            self.bounded(async |c, _| c.xrange_all(&key).await).await?;
        let mut out = Vec::with_capacity(reply.ids.len());
        for entry in reply.ids {
            let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
            let seq = field("seq").parse::<u64>().map_err(|_| Error::Reply {
                url: self.url.clone(),
                what: format!("checkpoint {} has no sequence number", entry.id),
            })?;
            out.push(Checkpoint {
                id: entry.id.clone(),
                host: field("host"),
                seq,
                hash: field("hash"),
                time: field("time"),
            });
        }
        Ok(out)
    }
}

/// The stream of a host's audit heads.
pub fn checkpoint_key(host: &str) -> String {
    format!("antispam:audit:{host}")
}
