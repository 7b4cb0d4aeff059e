//! Real processes for black-box tests: spawn a binary, read its machine-readable stdout lines
//! with deadlines, signal it, and always kill and reap it on drop. Each process's stderr goes
//! to a log file under target/test-logs for post-mortems.

#![allow(dead_code)]

pub mod impair;
pub mod member;
pub mod signal;
pub mod x11;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub const SERVER: &str = env!("CARGO_BIN_EXE_peerconnection_server");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_peerconnection_client");

pub struct Proc {
    pub name: String,
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    pub log: PathBuf,
    /// The write end of the process's stdin, for [`Proc::spawn_with_stdin`].
    stdin: Option<ChildStdin>,
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-logs");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

impl Proc {
    pub fn spawn(name: &str, bin: &str, args: &[&str]) -> Proc {
        Proc::spawn_with_env(name, bin, args, &[])
    }

    /// Like [`Proc::spawn`], with extra environment variables (`DISPLAY` for window tests).
    pub fn spawn_with_env(name: &str, bin: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::spawn_inner(name, bin, args, env, false)
    }

    /// Like [`Proc::spawn_with_env`], with stdin a pipe the test writes with
    /// [`Proc::write_stdin`] and closes with [`Proc::close_stdin`] (else stdin is /dev/null).
    pub fn spawn_with_stdin(name: &str, bin: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::spawn_inner(name, bin, args, env, true)
    }

    fn spawn_inner(
        name: &str,
        bin: &str,
        args: &[&str],
        env: &[(&str, &str)],
        piped_stdin: bool,
    ) -> Proc {
        let log = log_dir().join(format!("{name}-{}-{}.log", std::process::id(), unique()));
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(bin)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdin(if piped_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name: name.to_string(),
            child,
            lines,
            seen: Vec::new(),
            log,
            stdin,
        }
    }

    /// Writes `text` to the process's stdin (spawned with [`Proc::spawn_with_stdin`]).
    pub fn write_stdin(&mut self, text: &[u8]) {
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{}: stdin is not a pipe (or was closed)", self.name));
        stdin.write_all(text).expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Closes the process's stdin: it reads end-of-file.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line starting with `prefix`, within `timeout`; panics with what the
    /// process printed otherwise.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no line starting {prefix:?} within {timeout:?}; {}",
                    self.name,
                    self.transcript()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited before printing {prefix:?}; {}",
                    self.name,
                    self.transcript()
                ),
            }
        }
    }

    /// The next stdout line, whatever it is, within `timeout`; None on time-out or exit.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Every stdout line printed so far and not yet read, without waiting.
    pub fn drain(&mut self) -> Vec<String> {
        let new: Vec<String> = self.lines.try_iter().collect();
        self.seen.extend(new.iter().cloned());
        new
    }

    /// Every stdout line printed within the next `window`.
    pub fn lines_for(&mut self, window: Duration) -> Vec<String> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(l) = self.next_line(deadline.saturating_duration_since(Instant::now())) {
            out.push(l);
        }
        out
    }

    /// Every stdout line until the process exits (or `timeout` passes).
    pub fn lines_until_exit(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    self.seen.push(l.clone());
                    out.push(l);
                }
                Err(_) => return out,
            }
        }
    }

    /// Every stdout line read so far (by any of the reading methods).
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// The lines read so far that start with `prefix`.
    pub fn seen_with(&self, prefix: &str) -> Vec<&String> {
        self.seen.iter().filter(|l| l.starts_with(prefix)).collect()
    }

    /// What the process printed so far and where its stderr is: for assertion messages.
    pub fn transcript(&self) -> String {
        let stderr = self.stderr();
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<String> = tail
            .into_iter()
            .rev()
            .map(|l| l.chars().take(300).collect())
            .collect();
        format!(
            "{} stdout:\n{}\nstderr ({}), last lines:\n{}",
            self.name,
            self.seen.join("\n"),
            self.log.display(),
            tail.join("\n")
        )
    }

    /// The process's stderr log so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    pub fn interrupt(&self) {
        self.signal(libc::SIGINT);
    }

    /// The exit code once the process exits within `timeout` (None on timeout or a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// `peerconnection_client` named `name`, signing in to the server on 127.0.0.1:`port`,
/// offering only loopback candidates and printing STATS lines; headless unless `env` gives
/// it a `DISPLAY`. `extra` flags come last.
pub fn client(name: &str, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Proc {
    client_inner(name, port, extra, env, false)
}

/// The small local video the call tests send: the stamped test pattern at 320x240.
pub const PATTERN_ARGS: [&str; 6] = [
    "--video-source",
    "test",
    "--resolution",
    "320x240",
    "--bitrate",
    "400",
];

/// A headless client sending [`PATTERN_ARGS`]; `extra` flags last.
pub fn pattern_client(name: &str, port: u16, extra: &[&str]) -> Proc {
    client(name, port, &[&PATTERN_ARGS[..], extra].concat(), &[])
}

/// Like [`client`], with stdin a pipe ([`Proc::write_stdin`]).
pub fn client_with_stdin(name: &str, port: u16, extra: &[&str]) -> Proc {
    client_inner(name, port, extra, &[], true)
}

fn client_inner(
    name: &str,
    port: u16,
    extra: &[&str],
    env: &[(&str, &str)],
    piped_stdin: bool,
) -> Proc {
    let port = port.to_string();
    let mut args = vec![
        "--server",
        "127.0.0.1",
        "--port",
        &port,
        "--ice-ip",
        "127.0.0.1",
        "--name",
        name,
        "--stats",
    ];
    if !env.iter().any(|(k, _)| *k == "DISPLAY") {
        args.push("--headless");
    }
    args.extend(extra);
    Proc::spawn_inner(name, CLIENT, &args, env, piped_stdin)
}

/// The value of `key=value` in a machine-readable line (`STATS ... decoded=90 ...`).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The number in `key=value` of a machine-readable line; panics naming the line without it.
pub fn num(line: &str, key: &str) -> f64 {
    field(line, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key} in {line:?}"))
}

/// Raises this process's open-file limit to the hard limit (tests that hold thousands of
/// sockets).
pub fn raise_fd_limit() {
    peerconnection::reactor::raise_fd_limit().expect("raise RLIMIT_NOFILE");
}

/// CPU time (user + system) a process has used, from /proc.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The signaling server as a process on 127.0.0.1; SIGTERM and reaped on drop.
pub struct ServerProc {
    pub proc_: Proc,
    pub port: u16,
}

impl ServerProc {
    pub fn start(extra: &[&str]) -> ServerProc {
        ServerProc::start_on(0, extra)
    }

    pub fn start_on(port: u16, extra: &[&str]) -> ServerProc {
        let port_arg = port.to_string();
        let mut args = vec!["--bind", "127.0.0.1", "--port", &port_arg];
        args.extend(extra);
        ServerProc::wait_ready(Proc::spawn("server", SERVER, &args))
    }

    /// The server with its open-file limit set to `limit` (through the shell's ulimit).
    pub fn start_with_fd_limit(limit: u32, extra: &[&str]) -> ServerProc {
        let script = format!(
            "ulimit -n {limit} && exec {SERVER} --bind 127.0.0.1 --port 0 {}",
            extra.join(" ")
        );
        ServerProc::wait_ready(Proc::spawn("server", "sh", &["-c", &script]))
    }

    fn wait_ready(mut proc_: Proc) -> ServerProc {
        let line = proc_.wait_line(
            "peerconnection_server listening on",
            Duration::from_secs(10),
        );
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .expect("port in the listening line");
        ServerProc { proc_, port }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.proc_.signal(libc::SIGTERM);
        self.proc_.wait_exit(Duration::from_secs(5));
    }
}
