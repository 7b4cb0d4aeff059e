//! The server under the load generator: 2,000 members each holding a hanging GET (the
//! original caps at 1,022 sockets), every list and notification checked, and all 2,000
//! told at once when one more joins; plus short relay and churn runs that must lose nothing.

mod procs;

use std::time::Duration;

use procs::{raise_fd_limit, Proc, ServerProc};

const LOAD: &str = env!("CARGO_BIN_EXE_peerconnection_load");

fn run(port: u16, args: &[&str], timeout: Duration) -> String {
    let port = port.to_string();
    let mut all = vec!["--port", &port];
    all.extend(args);
    let mut p = Proc::spawn("load", LOAD, &all);
    let line = p.wait_line("RESULT", timeout);
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0), "{line}");
    line
}

#[test]
fn two_thousand_hanging_gets_all_hear_of_one_more_member() {
    raise_fd_limit();
    let server = ServerProc::start(&["--timeout", "600"]);
    let line = run(
        server.port,
        &[
            "--scenario",
            "signin",
            "--members",
            "2000",
            "--duration",
            "30",
        ],
        Duration::from_secs(300),
    );
    assert!(line.contains(" notifications=1999000 "), "{line}");
    assert!(line.contains(" newcomer_heard_by=2000"), "{line}");
    assert!(line.contains(" errors=0"), "{line}");
}

#[test]
fn relay_and_churn_lose_nothing() {
    let server = ServerProc::start(&[]);
    let relay = run(
        server.port,
        &[
            "--scenario",
            "relay",
            "--pairs",
            "5",
            "--size",
            "1000",
            "--duration",
            "1",
        ],
        Duration::from_secs(30),
    );
    assert!(
        relay.contains(" lost=0 ") && relay.contains(" errors=0"),
        "{relay}"
    );
    let churn = run(
        server.port,
        &[
            "--scenario",
            "churn",
            "--concurrency",
            "10",
            "--duration",
            "1",
        ],
        Duration::from_secs(30),
    );
    assert!(churn.contains(" errors=0"), "{churn}");
}
