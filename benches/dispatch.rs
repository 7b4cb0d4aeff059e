//! Request parse + dispatch through `PeerChannel`, in memory: what the server does per
//! request apart from the syscalls. Sign-in, message forwarding (to a held hanging GET and
//! to a queue) and notification fan-out, at 10 and 1,000 members.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use peerconnection::server::{Action, ChannelConfig, DataSocket, Limits, PeerChannel};
use peerconnection::signaling::http::{message_request, sign_in_request, wait_request};

const LIMITS: Limits = Limits {
    max_header_bytes: 8192,
    max_body_bytes: 1 << 20,
};

/// Parses `bytes` as one request and dispatches it on connection `conn`.
fn dispatch(
    channel: &mut PeerChannel,
    conn: usize,
    bytes: &[u8],
    now: Instant,
    out: &mut Vec<Action>,
) {
    let req = DataSocket::new()
        .feed(bytes, &LIMITS)
        .expect("valid request")
        .expect("complete request");
    channel.handle_request(conn, &req, now, out);
}

/// A channel with `n` members, each holding a hanging GET (conn = id) and nothing queued.
fn channel_with(n: u32, now: Instant) -> PeerChannel {
    let mut ch = PeerChannel::new(ChannelConfig {
        max_queue_items: usize::MAX,
        max_queue_bytes: usize::MAX,
        ..ChannelConfig::default()
    });
    let mut out = Vec::new();
    for i in 1..=n {
        dispatch(
            &mut ch,
            0,
            &sign_in_request(&format!("m{i}")),
            now,
            &mut out,
        );
    }
    // Drain every queued join notification, then hold a GET for each member.
    for id in 1..=n {
        loop {
            out.clear();
            dispatch(&mut ch, id as usize, &wait_request(id), now, &mut out);
            if out.is_empty() {
                break;
            }
        }
    }
    ch
}

fn bench(c: &mut Criterion) {
    let now = Instant::now();
    let mut out = Vec::with_capacity(2048);
    for n in [10u32, 1000] {
        let mut g = c.benchmark_group(format!("dispatch/{n}_members"));
        // Fan-out: one sign-in tells n held GETs; then the newcomer signs out (tells them
        // again) and every member re-arms. Reported per sign-in + sign-out cycle.
        g.bench_function(BenchmarkId::new("sign_in_fan_out", n), |b| {
            let mut ch = channel_with(n, now);
            b.iter(|| {
                out.clear();
                dispatch(&mut ch, 0, &sign_in_request("newcomer"), now, &mut out);
                let id = match out.last() {
                    Some(Action::Send { bytes, .. }) => {
                        let text = String::from_utf8_lossy(bytes);
                        let p = text.find("Pragma: ").expect("pragma") + 8;
                        text[p..]
                            .split('\r')
                            .next()
                            .unwrap()
                            .parse::<u32>()
                            .unwrap()
                    }
                    _ => unreachable!(),
                };
                for m in 1..=n {
                    dispatch(&mut ch, m as usize, &wait_request(m), now, &mut out);
                }
                let signout = format!("GET /sign_out?peer_id={id} HTTP/1.0\r\n\r\n");
                dispatch(&mut ch, 0, signout.as_bytes(), now, &mut out);
                for m in 1..=n {
                    dispatch(&mut ch, m as usize, &wait_request(m), now, &mut out);
                }
                black_box(out.len())
            });
        });
        // A message to a member holding its hanging GET, and its re-arm.
        g.bench_function(BenchmarkId::new("message_to_held_get", n), |b| {
            let mut ch = channel_with(n, now);
            let msg = message_request(1, 2, "text/plain", &[b'x'; 200]);
            let wait = wait_request(2);
            b.iter(|| {
                out.clear();
                dispatch(&mut ch, 100_000, &msg, now, &mut out);
                dispatch(&mut ch, 2, &wait, now, &mut out);
                black_box(out.len())
            });
        });
        // A message queued (no GET held) and then taken by a /wait.
        g.bench_function(BenchmarkId::new("message_queued_then_waited", n), |b| {
            let mut ch = channel_with(n, now);
            let msg = message_request(1, 3, "text/plain", &[b'x'; 200]);
            let wait = wait_request(3);
            // Member 3's held GET answers the first message; from then on it has none.
            dispatch(&mut ch, 100_000, &msg, now, &mut out);
            b.iter(|| {
                out.clear();
                dispatch(&mut ch, 100_000, &msg, now, &mut out);
                dispatch(&mut ch, 100_001, &wait, now, &mut out);
                black_box(out.len())
            });
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
