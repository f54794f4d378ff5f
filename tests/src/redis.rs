//! A private Redis (Debian's `redis-server`) on a loopback port, and a TCP proxy in front of it
//! that a test can cut (a host partitioned from the fleet store) and heal.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use crate::postfix::free_loopback_port;

/// `redis-server` on 127.0.0.1:PORT, no persistence (a restart loses everything, the worst
/// case for the fleet budget), with a password. Killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub password: String,
    dir: PathBuf,
    /// TLS only (`--port 0 --tls-port PORT`): the CA, certificate and key files.
    pub tls: Option<Tls>,
}

/// A CA and a server certificate for 127.0.0.1 made with openssl(1).
#[derive(Clone)]
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Tls {
    /// Makes a CA named `name` and a certificate it signs for IP 127.0.0.1, in `dir`.
    pub fn make(dir: &Path, name: &str) -> Tls {
        let at = |f: &str| dir.join(format!("{name}-{f}"));
        let (ca_key, ca, key, csr, cert, ext) = (
            at("ca.key"),
            at("ca.pem"),
            at("server.key"),
            at("server.csr"),
            at("server.pem"),
            at("ext.cnf"),
        );
        std::fs::write(&ext, "subjectAltName = IP:127.0.0.1\n").expect("write ext");
        let openssl = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let os = |s: &'static str| std::ffi::OsStr::new(s);
        openssl(&[
            os("req"),
            os("-x509"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-days"),
            os("2"),
            os("-subj"),
            std::ffi::OsStr::new(&format!("/CN={name} test CA")),
            os("-keyout"),
            ca_key.as_os_str(),
            os("-out"),
            ca.as_os_str(),
        ]);
        openssl(&[
            os("req"),
            os("-newkey"),
            os("rsa:2048"),
            os("-nodes"),
            os("-subj"),
            os("/CN=127.0.0.1"),
            os("-keyout"),
            key.as_os_str(),
            os("-out"),
            csr.as_os_str(),
        ]);
        openssl(&[
            os("x509"),
            os("-req"),
            os("-in"),
            csr.as_os_str(),
            os("-CA"),
            ca.as_os_str(),
            os("-CAkey"),
            ca_key.as_os_str(),
            os("-CAcreateserial"),
            os("-days"),
            os("2"),
            os("-extfile"),
            ext.as_os_str(),
            os("-out"),
            cert.as_os_str(),
        ]);
        Tls { ca, cert, key }
    }
}

/// Is Debian's `redis-server` installed? (With `CI=true` its absence fails the test.)
pub fn available() -> bool {
    if Path::new("/usr/bin/redis-server").exists() && Path::new("/usr/bin/redis-cli").exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "redis-server is missing (Debian package redis-server; cargo xtask setup installs it)"
    );
    eprintln!("SKIPPED: redis-server is not installed (Debian package redis-server)");
    false
}

impl RedisServer {
    pub fn start(dir: &Path) -> RedisServer {
        Self::start_with(dir, None)
    }

    /// TLS only, with this certificate.
    pub fn start_tls(dir: &Path, tls: Tls) -> RedisServer {
        Self::start_with(dir, Some(tls))
    }

    fn start_with(dir: &Path, tls: Option<Tls>) -> RedisServer {
        let mut r = RedisServer {
            child: None,
            port: free_loopback_port(),
            password: format!("test-{}", crate::nanos()),
            dir: dir.to_path_buf(),
            tls,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let log = self.dir.join(format!("redis-{}.log", crate::next_seq()));
        let mut cmd = Command::new("/usr/bin/redis-server");
        cmd.args(["--bind", "127.0.0.1"]);
        match &self.tls {
            None => cmd.arg("--port").arg(self.port.to_string()),
            Some(t) => cmd
                .args(["--port", "0", "--tls-port"])
                .arg(self.port.to_string())
                .arg("--tls-cert-file")
                .arg(&t.cert)
                .arg("--tls-key-file")
                .arg(&t.key)
                .arg("--tls-ca-cert-file")
                .arg(&t.ca)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = cmd
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--requirepass", &self.password])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn /usr/bin/redis-server");
        self.child = Some(child);
        let ready = crate::poll_until(
            crate::bound(Duration::from_secs(10)),
            Duration::from_millis(20),
            || self.ping().then_some(()),
        );
        assert!(
            ready.is_some(),
            "redis-server on port {} did not answer PING; log {}",
            self.port,
            log.display()
        );
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT`, or through `port` (a proxy).
    pub fn url_via(&self, port: u16) -> String {
        format!("redis://:{}@127.0.0.1:{port}", self.password)
    }

    pub fn url(&self) -> String {
        self.url_via(self.port)
    }

    /// A password file for `--fleet-password-file`.
    pub fn password_file(&self) -> PathBuf {
        let p = self.dir.join("redis-password");
        std::fs::write(&p, format!("{}\n", self.password)).expect("write password file");
        p
    }

    /// Stops the server (SIGKILL: nothing saved) and starts a new one on the same port.
    pub fn restart(&mut self) -> Duration {
        let t = Instant::now();
        self.kill();
        self.spawn();
        t.elapsed()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `redis-cli` with the password, its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("/usr/bin/redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string());
        if let Some(t) = &self.tls {
            cmd.arg("--tls").arg("--cacert").arg(&t.ca);
        }
        let out = cmd
            .env("REDISCLI_AUTH", &self.password)
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ping(&self) -> bool {
        self.cli(&["PING"]).trim() == "PONG"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy on a loopback port to `target`. `cut()` closes every connection and refuses new
/// ones (as a partition would: the agent's calls fail) until `heal()`.
pub struct TcpProxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TcpProxy {
    pub fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, s, k) = (cut.clone(), stop.clone(), conns.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) if !c.load(Ordering::Relaxed) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) =
                            TcpStream::connect_timeout(&target, Duration::from_secs(1))
                        {
                            pipe(client, server, &k);
                        }
                    }
                    Ok((client, _)) => drop(client),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TcpProxy {
            port,
            cut,
            stop,
            conns,
            thread: Some(thread),
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::Relaxed);
    }
}

/// Copies both ways until either side closes; the sockets are kept so `cut` can close them.
fn pipe(client: TcpStream, server: TcpStream, conns: &Mutex<Vec<TcpStream>>) {
    let mut held = conns.lock().unwrap();
    for s in [&client, &server] {
        if let Ok(c) = s.try_clone() {
            held.push(c);
        }
    }
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    };
    if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
        copy(client, s2);
        copy(server, c2);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
