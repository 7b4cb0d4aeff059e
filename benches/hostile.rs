//! What one hostile message costs the client's loop: an offer with 10,000 candidates
//! (about 700 KB), answered while idle and refused while busy. The baseline in the same
//! run is the previous client's handling of the same offer, str0m parsing and applying it
//! whole; the budget is 100 ms of loop time per message.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use peerconnection::client::client_app::{AppConfig, ClientApp};
use peerconnection::client::MediaConfig;
use peerconnection::client::{CallEvent, CallOutput, ClientEvent, ClientState, Conductor};
use peerconnection::signaling::message::{PeerMessage, SdpKind};
use str0m::change::SdpOffer;
use str0m::Rtc;

const MEDIA: MediaConfig = MediaConfig {
    width: 320,
    height: 240,
    fps: 30.0,
    bitrate_bps: 300_000,
};

fn conductor() -> Conductor {
    Conductor::new(MEDIA, vec![SocketAddr::from(([127, 0, 0, 1], 9))])
}

/// A real offer from our own conductor, with `n` host candidates appended.
fn offer_with_candidates(n: u32) -> String {
    let mut c = conductor();
    c.call(1, Instant::now()).expect("offer");
    let sdp = std::iter::from_fn(|| c.poll_output())
        .find_map(|o| match o {
            CallOutput::Signal { body, .. } => match PeerMessage::parse(&body) {
                Ok(PeerMessage::Sdp { sdp, .. }) => Some(sdp),
                _ => None,
            },
            _ => None,
        })
        .expect("an offer");
    let mut huge = sdp.trim_end().to_string();
    for i in 0..n {
        huge.push_str(&format!(
            "\r\na=candidate:{i} 1 udp {} 127.0.0.1 {} typ host",
            2_130_706_431 - i,
            1024 + i % 60_000
        ));
    }
    huge.push_str("\r\n");
    huge
}

fn bench(c: &mut Criterion) {
    let sdp = offer_with_candidates(10_000);
    let body = PeerMessage::Sdp {
        kind: SdpKind::Offer,
        sdp: sdp.clone(),
    }
    .to_body();
    let mut g = c.benchmark_group("hostile_offer_10k_candidates");
    g.sample_size(10);

    // Today: the conductor caps the candidates before str0m parses the offer.
    g.bench_function("answer_when_idle", |b| {
        b.iter(|| {
            let mut cond = conductor();
            cond.accept_offer(2, black_box(&sdp), Instant::now())
                .expect("answered");
            while cond.poll_output().is_some() {}
        })
    });

    // Today: a client in a call refuses it (parse the JSON, BYE back).
    let now = Instant::now();
    let mut app = ClientApp::new(
        AppConfig {
            name: "bob".into(),
            server: "localhost".into(),
            port: 8888,
            window: false,
            autoconnect: false,
            auto_answer: true,
            autocall: false,
            call_name: None,
            stats: false,
        },
        now,
    );
    app.signaling_event(ClientEvent::StateChanged(ClientState::Connected), now);
    app.signaling_event(ClientEvent::SignedIn { id: 1 }, now);
    app.call_event(CallEvent::Started { peer: 3 });
    while app.poll_output().is_some() {}
    g.bench_function("refuse_when_busy", |b| {
        b.iter(|| {
            app.signaling_event(
                ClientEvent::Message {
                    from: 2,
                    body: black_box(body.clone()),
                },
                now,
            );
            while app.poll_output().is_some() {}
        })
    });

    // Baseline: the previous client handed the whole offer to str0m.
    g.bench_function("baseline_str0m_whole_offer", |b| {
        b.iter(|| {
            let offer = SdpOffer::from_sdp_string(black_box(&sdp)).expect("parses");
            let mut rtc = Rtc::builder().build(Instant::now());
            let _ = black_box(rtc.sdp_api().accept_offer(offer));
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
