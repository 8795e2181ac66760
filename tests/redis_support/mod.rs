//! A real `redis-server` for the Redis tests: started on a free 127.0.0.1
//! port with a temp dir of its own, stopped (SIGTERM) when dropped — and
//! also when the test process ends in any way, even killed: the server runs
//! under a small `sh` that holds a pipe from the test process and
//! terminates the server when that pipe closes.
//!
//! Without `redis-server` on the `PATH` every Redis test **fails** with a
//! message saying how to install it (`.ci/run` does); none is skipped.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tracepool::{Engine, EngineBuilder, Exhausted};

/// Runs the server; prints its pid, then waits for its stdin to close and
/// terminates the server with SIGTERM (a clean shutdown: with AOF on, it
/// writes everything out first).
const WRAPPER: &str = r#"
redis-server "$@" >"$TP_REDIS_LOG" 2>&1 &
pid=$!
echo "$pid"
read -r _ignored
kill -TERM "$pid" 2>/dev/null
wait "$pid"
"#;

/// A `redis-server` of the tests.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<(Child, ChildStdin)>,
    /// The server's own pid.
    pub pid: u32,
}

/// The `redis-server` binary, or a failure that says what to do.
fn binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join("redis-server");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "redis-server is not installed (not on PATH): the Redis tests need a real server. \
         Install it with `apt-get install -y --no-install-recommends redis-server` \
         (.ci/run does); these tests fail rather than skip without it"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Sends one inline command and returns the first line of the answer.
fn ask(port: u16, command: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{command}\r\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
}

impl RedisServer {
    /// A server with the default settings (`--save ""`: no snapshots).
    pub fn start() -> RedisServer {
        RedisServer::start_with(&["--save", ""])
    }

    /// A server with extra `redis-server` arguments.
    pub fn start_with(args: &[&str]) -> RedisServer {
        binary();
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let mut s = RedisServer {
            port: free_port(),
            dir,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
            pid: 0,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut args: Vec<String> = vec![
            "--port".into(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            self.dir.path().display().to_string(),
            "--daemonize".into(),
            "no".into(),
        ];
        args.extend(self.args.iter().cloned());
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("sh")
            .args(&args)
            .env("TP_REDIS_LOG", self.dir.path().join("redis.log"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sh for redis-server");
        let stdin = child.stdin.take().expect("stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server's pid");
        self.pid = line.trim().parse().expect("a pid");
        self.child = Some((child, stdin));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(answer) = ask(self.port, "PING")
                && answer == "+PONG"
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING within 20 s; its log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Stops the server with SIGTERM and waits until it exited.
    pub fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Stops the server (SIGTERM) and starts it again on the same port and
    /// directory with the same arguments.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Sends one command (inline form) and returns the first answer line.
    pub fn cmd(&self, command: &str) -> String {
        ask(self.port, command).expect("ask redis-server")
    }

    /// A synchronous client connection.
    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to redis-server")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One server per test process, started on first use (stopped when the
/// process exits).
pub fn shared() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

/// A key prefix no other engine of this process (or an earlier run) uses.
pub fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{}-{}:",
        std::process::id(),
        fastrand::u32(..),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A builder on `server` with a fresh prefix and a short lease.
pub fn builder_on(server: &RedisServer, prefix: &str) -> EngineBuilder {
    Engine::builder()
        .redis(server.url())
        .redis_prefix(prefix)
        .lease_ttl(Duration::from_millis(900))
        .on_exhausted(Exhausted::Wait(Duration::from_secs(5)))
}

/// Two engines sharing one prefix on the shared server.
pub fn pair(capacity: usize) -> (Engine, Engine, String) {
    let prefix = unique_prefix();
    let s = shared();
    let a = builder_on(s, &prefix)
        .capacity(capacity)
        .workers(1)
        .build()
        .expect("engine a");
    let b = builder_on(s, &prefix)
        .capacity(capacity)
        .workers(1)
        .build()
        .expect("engine b");
    (a, b, prefix)
}

/// Polls `f` every 5 ms until it is true; fails after `secs`.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every key under `prefix` (KEYS is fine in a test, on a test server).
pub fn keys(server: &RedisServer, prefix: &str) -> Vec<String> {
    let mut c = server.client();
    let mut k: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut c)
        .expect("KEYS");
    k.sort();
    k
}

/// Reads the whole of `r` (helper for child processes' output).
pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}
