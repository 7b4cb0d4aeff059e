//! The cluster's decisions on a virtual clock, with Redis played by hand: what the node
//! writes is read as text, and replies are fed in the order Redis would send them.

use super::*;
use crate::server::peer_channel::{ChannelConfig, Disposition};
use crate::server::{DataSocket, Limits};
use crate::signaling::http::parse_response;

const LIMITS: Limits = Limits {
    max_header_bytes: 8192,
    max_body_bytes: 1 << 20,
};

struct Fixture {
    ch: PeerChannel,
    node: ClusterNode,
    now: Instant,
    out: Vec<Action>,
}

fn url() -> RedisUrl {
    RedisUrl::parse("redis://127.0.0.1:6379").unwrap()
}

impl Fixture {
    /// A node whose links are up and subscribed, joined, with ids 1..=256 and one remote
    /// member, carol (300), on server `other`.
    fn joined() -> Fixture {
        let now = Instant::now();
        let mut ch = PeerChannel::new(ChannelConfig::default());
        ch.enable_cluster();
        let config = ClusterConfig {
            server_ttl: Duration::from_secs(3),
            max_queue_items: 3,
        };
        let mut f = Fixture {
            ch,
            node: ClusterNode::new(url(), "me".into(), config, now),
            now,
            out: Vec::new(),
        };
        f.node.commands.connecting();
        f.node.subscriber.connecting();
        assert_eq!(f.written_sub(), "PING");
        assert_eq!(render(std::mem::take(f.node.commands.output())), "PING");
        f.commands(b"+PONG\r\n");
        f.pushes(b"+PONG\r\n");
        assert_eq!(f.written_sub(), "SUBSCRIBE pc:presence pc:wake:me");
        f.pushes(
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
        );
        assert!(f.node.is_joined());
        let sent = f.written();
        assert!(sent.contains("SET pc:server:me 1 PX 3000"), "{sent}");
        assert!(
            sent.ends_with("HGETALL pc:members | INCRBY pc:ids 256"),
            "{sent}"
        );
        // EVAL, SET, HGETALL, INCRBY.
        f.commands(b":0\r\n+OK\r\n*2\r\n$3\r\n300\r\n$11\r\nother carol\r\n:256\r\n");
        f
    }

    fn commands(&mut self, bytes: &[u8]) {
        let mut ev = Vec::new();
        self.node.commands.received(bytes, &mut ev).unwrap();
        for e in ev {
            self.node
                .on_command(e, &mut self.ch, self.now, &mut self.out);
        }
    }

    /// Writes what is due and answers every command in flight with nil (an empty queue,
    /// an ignored reply).
    fn settle(&mut self) {
        loop {
            self.written();
            let n = self.node.commands.in_flight();
            if n == 0 {
                break;
            }
            self.commands("$-1\r\n".repeat(n).as_bytes());
        }
    }

    fn pushes(&mut self, bytes: &[u8]) {
        let mut ev = Vec::new();
        self.node.subscriber.received(bytes, &mut ev).unwrap();
        for e in ev {
            self.node
                .on_subscriber(e, &mut self.ch, self.now, &mut self.out);
        }
    }

    fn message(&mut self, channel: &str, payload: &str) {
        let push = format!(
            "*3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n${}\r\n{payload}\r\n",
            channel.len(),
            payload.len()
        );
        self.pushes(push.as_bytes());
    }

    /// Commands written since last asked, as `ARG ARG | ARG ...`.
    fn written(&mut self) -> String {
        self.node.drive(&mut self.ch, self.now, &mut self.out);
        render(std::mem::take(self.node.commands.output()))
    }

    fn written_sub(&mut self) -> String {
        render(std::mem::take(self.node.subscriber.output()))
    }

    fn req(&mut self, conn: ConnId, raw: &str) -> Disposition {
        let req = DataSocket::new()
            .feed(raw.as_bytes(), &LIMITS)
            .unwrap()
            .unwrap();
        self.ch.handle_request(conn, &req, self.now, &mut self.out)
    }

    fn get(&mut self, conn: ConnId, target: &str) -> Disposition {
        self.req(conn, &format!("GET {target} HTTP/1.0\r\n\r\n"))
    }

    fn post(&mut self, conn: ConnId, from: PeerId, to: PeerId, body: &str) -> Disposition {
        self.req(
            conn,
            &format!(
                "POST /message?peer_id={from}&to={to} HTTP/1.0\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
    }

    /// Answers sent: (connection, status, pragma, body).
    fn answers(&mut self) -> Vec<(ConnId, u16, Option<PeerId>, String)> {
        self.out
            .drain(..)
            .filter_map(|a| match a {
                Action::Send { conn, bytes } => {
                    let r = parse_response(&bytes).unwrap().unwrap();
                    Some((
                        conn,
                        r.code,
                        r.pragma,
                        String::from_utf8_lossy(&r.body).into_owned(),
                    ))
                }
                Action::Close { .. } => None,
            })
            .collect()
    }
}

/// The command a held GET of `id` fetches its message with.
fn fetch(id: PeerId) -> String {
    format!(
        "EVAL {} 3 pc:q:{id} pc:p:{id} pc:ph:{id} me",
        String::from_utf8_lossy(FETCH)
    )
}

fn render(bytes: Vec<u8>) -> String {
    let mut commands = Vec::new();
    let mut at = 0;
    while let Ok(Some((v, n))) = resp::decode(&bytes[at..]) {
        at += n;
        let args: Vec<String> = v
            .array()
            .unwrap()
            .iter()
            .map(|a| String::from_utf8_lossy(a.bytes().unwrap()).replace('\n', "/"))
            .collect();
        commands.push(args.join(" "));
    }
    commands.join(" | ")
}

#[test]
fn sign_in_lists_remote_members_and_is_announced() {
    let mut f = Fixture::joined();
    assert_eq!(f.get(1, "/sign_in?alice"), Disposition::Pending);
    assert_eq!(
        f.written(),
        "HSET pc:members 1 me alice | PUBLISH pc:presence J me 1 alice | PING"
    );
    assert!(f.answers().is_empty(), "answered once Redis lists alice");
    f.commands(b":1\r\n:1\r\n+PONG\r\n");
    let answers = f.answers();
    assert_eq!(answers[0].3, "alice,1,1\ncarol,300,1\n");
}

#[test]
fn remote_joins_and_leaves_reach_held_gets_and_garbage_is_ignored() {
    let mut f = Fixture::joined();
    f.get(1, "/sign_in?alice");
    f.get(2, "/wait?peer_id=1");
    f.answers();
    f.message("pc:presence", "J other 400 dave");
    assert_eq!(f.answers(), [(2, 200, Some(1), "dave,400,1\n".to_string())]);
    f.message("pc:presence", "X nonsense");
    f.message("pc:presence", "J other notanid x");
    f.pushes(b"*2\r\n:1\r\n$-1\r\n");
    f.get(3, "/wait?peer_id=1");
    assert_eq!(f.answers(), []);
    f.message("pc:presence", "L other 400");
    assert_eq!(f.answers(), [(3, 200, Some(1), "dave,400,0\n".to_string())]);
}

#[test]
fn a_message_is_answered_once_redis_took_it_and_wakes_the_home_server() {
    let mut f = Fixture::joined();
    f.get(1, "/sign_in?alice");
    f.settle();
    f.answers();
    assert_eq!(f.post(5, 1, 300, "hi"), Disposition::Pending);
    assert!(f.answers().is_empty());
    let sent = f.written();
    assert!(sent.starts_with("EVAL "), "{sent}");
    // The script wakes the home Redis names (not this server's cache of it).
    assert!(
        sent.ends_with(" 2 pc:members pc:q:300 me 300 1/text/plain/hi 1"),
        "{sent}"
    );
    assert!(sent.contains("'pc:wake:' .. s"), "{sent}");
    f.commands(b":1\r\n");
    assert_eq!(f.answers(), [(5, 200, None, String::new())]);
    assert_eq!(f.written(), "", "carol is not held here: nothing to fetch");
    // A connection closed before Redis answered is not answered (its key may be reused).
    f.post(6, 1, 300, "x");
    f.written();
    f.node.connection_closed(6);
    f.commands(b":2\r\n");
    f.settle();
    assert!(f.answers().is_empty());
    // Redis does not list one of the two (a leave this server has not heard of yet).
    f.post(7, 1, 300, "x");
    f.written();
    f.commands(b":-1\r\n");
    assert_eq!(f.answers()[0].3, "Peer most likely gone.");
}

#[test]
fn a_message_leaves_redis_only_once_its_answer_is_written_whole() {
    let mut f = Fixture::joined();
    f.get(1, "/sign_in?alice");
    f.settle();
    f.answers();
    assert_eq!(f.get(2, "/wait?peer_id=1"), Disposition::Held(1));
    assert_eq!(f.written(), fetch(1));
    f.commands(b"$18\r\n300\ntext/plain\nhey\r\n");
    assert_eq!(f.answers(), [(2, 200, Some(300), "hey".to_string())]);
    // Pending until the answer is written whole; then it leaves Redis.
    assert_eq!(f.written(), "");
    f.node.answer_written(2);
    let ack = f.written();
    assert!(ack.starts_with("EVAL "), "{ack}");
    assert!(
        ack.ends_with(" 4 pc:members pc:q:1 pc:p:1 pc:ph:1 me 1"),
        "{ack}"
    );
    assert!(ack.contains("'DEL', KEYS[3], KEYS[4]"), "{ack}");
    f.commands(b":0\r\n");
    // The GET closes while the message is on its way: it stays pending (nothing pushed
    // back) and is released, for the next GET on whichever server.
    f.get(3, "/wait?peer_id=1");
    assert_eq!(f.written(), fetch(1));
    f.ch.hanging_get_closed(3, 1, f.now);
    f.node.connection_closed(3);
    f.commands(b"$18\r\n300\ntext/plain\nbye\r\n");
    assert!(f.answers().is_empty());
    let release = f.written();
    assert!(
        release.starts_with("EVAL ") && release.ends_with(" 2 pc:members pc:ph:1 me 1"),
        "{release}"
    );
    f.commands(b":0\r\n");
    // An answer cut before it was written whole: still pending, handed out again.
    f.get(4, "/wait?peer_id=1");
    assert_eq!(f.written(), fetch(1));
    f.commands(b"$18\r\n300\ntext/plain\nbye\r\n");
    assert_eq!(f.answers(), [(4, 200, Some(300), "bye".to_string())]);
    f.node.connection_closed(4);
    f.node.answer_written(4);
    let release = f.written();
    assert!(
        release.starts_with("EVAL ") && release.ends_with(" 2 pc:members pc:ph:1 me 1"),
        "a closed connection's answer deletes nothing, it is released: {release}"
    );
    f.commands(b":0\r\n");
    // An empty queue leaves the GET held; a wake-up fetches again.
    f.get(5, "/wait?peer_id=1");
    assert_eq!(f.written(), fetch(1));
    f.commands(b"$-1\r\n");
    assert!(f.answers().is_empty());
    f.message("pc:wake:me", "1");
    assert_eq!(f.written(), fetch(1));
}

#[test]
fn a_member_past_its_redis_queue_bound_is_evicted_everywhere() {
    let mut f = Fixture::joined();
    f.get(1, "/sign_in?alice");
    f.settle();
    f.post(5, 1, 300, "x");
    f.written();
    f.commands(b":4\r\n");
    assert_eq!(
        f.written(),
        "HDEL pc:members 300 | HDEL pc:seen 300 | DEL pc:q:300 pc:p:300 pc:ph:300 | PUBLISH pc:presence L me 300"
    );
    f.answers();
    f.settle();
    // Redis no longer lists it: the next message is refused there.
    f.post(6, 1, 300, "x");
    f.written();
    f.commands(b":-1\r\n");
    assert_eq!(f.answers()[0].3, "Peer most likely gone.");
}

#[test]
fn a_request_for_a_remote_member_adopts_it() {
    let mut f = Fixture::joined();
    assert_eq!(f.get(2, "/wait?peer_id=300"), Disposition::Held(300));
    assert_eq!(
        f.written(),
        format!(
            "EVAL {} 2 pc:members pc:presence 300 me carol M me 300 | {}",
            String::from_utf8_lossy(MOVE),
            fetch(300)
        )
    );
    // Its old server hears the move and forgets it without a leave notice.
    let mut old = Fixture::joined();
    old.get(1, "/sign_in?watcher");
    old.get(2, "/wait?peer_id=1");
    old.answers();
    old.message("pc:presence", "J other 500 eve");
    old.answers();
    old.get(3, "/wait?peer_id=1");
    old.get(4, "/wait?peer_id=500");
    assert!(old.ch.is_local(500));
    old.settle();
    // A move another server made before ours (published before it) is stale: ignored.
    old.message("pc:presence", "M other 500");
    assert!(
        old.ch.is_local(500),
        "a move heard before our own is older than ours"
    );
    old.message("pc:presence", "M me 500");
    // Something eve has not read yet here (its GET gone): a join.
    old.ch.hanging_get_closed(4, 500, old.now);
    old.message("pc:presence", "J other 600 frank");
    old.answers();
    old.message("pc:presence", "M other 500");
    assert!(!old.ch.is_local(500));
    assert!(old.answers().is_empty(), "a move is not a leave");
    // What eve had not read follows it, to the front of its list, and its server is woken.
    assert_eq!(
        old.written(),
        "LPUSH pc:q:500 500/text/plain/frank,600,1/ | PUBLISH pc:wake:other 500"
    );
}

#[test]
fn losing_redis_serves_locally_and_rejoining_registers_again() {
    let mut f = Fixture::joined();
    f.get(1, "/sign_in?alice");
    f.get(2, "/sign_in?bob");
    f.settle();
    f.answers();
    f.post(5, 1, 2, "in flight");
    f.written();
    let lost = f.node.commands.disconnected(f.now);
    f.node.link_lost(&mut f.ch, lost, &mut f.out);
    assert_eq!(f.answers()[0].1, 503);
    assert!(!f.node.is_joined());
    // Local members still reach each other, through the local queue.
    assert_eq!(f.post(6, 1, 2, "local"), Disposition::Answered);
    f.get(7, "/wait?peer_id=2");
    let got: Vec<String> = f.answers().into_iter().map(|a| a.3).collect();
    assert_eq!(got, ["", "local"]);
    f.get(8, "/sign_out?peer_id=2");
    // Back: both links up again.
    f.now += Duration::from_secs(1);
    f.node.subscriber.disconnected(f.now);
    f.node.commands.connecting();
    f.node.subscriber.connecting();
    f.node.commands.output().clear();
    f.commands(b"+PONG\r\n");
    f.pushes(b"+PONG\r\n");
    f.written_sub();
    f.pushes(
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
    );
    let sent = f.written();
    assert!(sent.starts_with("EVAL "), "{sent}");
    assert!(
        sent.contains("pc:ids 300 |"),
        "the id counter is raised past known ids: {sent}"
    );
    assert!(sent.contains("PUBLISH pc:presence L me 2"), "{sent}");
    assert!(
        sent.contains("HSET pc:members 1 me alice | PUBLISH pc:presence J me 1 alice"),
        "{sent}"
    );
}

#[test]
fn a_silent_server_is_reaped_once_after_a_grace_period() {
    let mut f = Fixture::joined();
    f.get(1, "/sign_in?alice");
    f.get(2, "/wait?peer_id=1");
    f.settle();
    f.answers();
    f.now += Duration::from_secs(1);
    let sent = f.written();
    assert!(
        sent.starts_with(&format!(
            "SET pc:server:me 1 PX 3000 | EXISTS pc:server:other | {} | EVAL ",
            fetch(1)
        )),
        "{sent}"
    );
    f.commands(b"+OK\r\n:0\r\n$-1\r\n:1\r\n");
    assert!(
        !f.written().contains("pc:reap"),
        "no reaping within a TTL of joining"
    );
    f.now += Duration::from_secs(3);
    let sent = f.written();
    assert!(sent.contains("EXISTS pc:server:other"), "{sent}");
    f.commands(b"+OK\r\n:0\r\n$-1\r\n");
    assert_eq!(f.written(), "SET pc:reap:other me NX PX 3000");
    // The sweep's HGETALL (one TTL after joining) still lists carol; then the lock is ours.
    f.commands(b"*2\r\n$3\r\n300\r\n$11\r\nother carol\r\n+OK\r\n");
    assert_eq!(
        f.written(),
        "HDEL pc:members 300 | HDEL pc:seen 300 | DEL pc:q:300 pc:p:300 pc:ph:300 | PUBLISH pc:presence L me 300"
    );
    assert_eq!(
        f.answers(),
        [(2, 200, Some(1), "carol,300,0\n".to_string())]
    );
}

#[test]
fn last_seen_is_written_once_a_second_in_one_command_and_removed_on_leaving() {
    let mut f = Fixture::joined();
    f.get(1, "/sign_in?alice");
    f.get(2, "/sign_in?bob");
    f.settle();
    f.get(3, "/wait?peer_id=1");
    f.post(4, 2, 300, "x");
    let sent = f.written();
    assert!(!sent.contains("pc:seen"), "not within the second: {sent}");
    // Alice's GET is answered at once (bob's join), bob's message waits for the EVAL.
    assert_eq!(f.node.commands.in_flight(), 1, "{sent}");
    f.commands(b":1\r\n");
    f.answers();
    f.written();
    f.now += SEEN_EVERY;
    let sent = f.written();
    let seen: Vec<&str> = sent
        .split(" | ")
        .filter(|c| c.contains(" 2 pc:members pc:seen "))
        .collect();
    assert_eq!(seen.len(), 1, "one command for both: {sent}");
    assert!(seen[0].starts_with("EVAL "), "{sent}");
    // ... 2 pc:members pc:seen MS 1 2
    let fields: Vec<&str> = seen[0].rsplit(' ').take(3).collect();
    assert_eq!((fields[1], fields[0]), ("1", "2"), "{sent}");
    let ms: u64 = fields[2].parse().expect("unix ms");
    let wall = unix_ms();
    assert!(ms <= wall && wall - ms < 60_000, "{ms} against {wall}");
    f.settle();
    // Nothing seen since: nothing written.
    f.now += SEEN_EVERY;
    assert!(!f.written().contains("pc:seen"));
    // Bob leaves: his field goes with him, and he is not written again.
    f.get(5, "/wait?peer_id=2");
    f.get(6, "/sign_out?peer_id=2");
    let sent = f.written();
    assert!(sent.contains("HDEL pc:seen 2"), "{sent}");
    f.settle();
    f.now += SEEN_EVERY;
    assert!(!f.written().contains("pc:seen"));
}

#[test]
fn a_wake_up_while_a_fetch_is_on_its_way_fetches_again_after_a_nil() {
    let mut f = Fixture::joined();
    f.get(1, "/sign_in?alice");
    f.settle();
    f.answers();
    f.get(2, "/wait?peer_id=1");
    assert_eq!(f.written(), fetch(1));
    // The fetch may have run before the message the wake-up announces was queued.
    f.message("pc:wake:me", "1");
    assert_eq!(f.written(), "");
    f.commands(b"$-1\r\n");
    assert_eq!(f.written(), fetch(1));
    f.commands(b"$17\r\n300\ntext/plain\nhi\r\n");
    assert_eq!(f.answers(), [(2, 200, Some(300), "hi".to_string())]);
}

#[test]
fn a_graceful_stop_removes_this_server_s_members_and_says_when_redis_took_it() {
    let mut f = Fixture::joined();
    f.get(1, "/sign_in?alice");
    f.settle();
    f.answers();
    assert!(f.node.leave_all(&f.ch));
    // Only this server's members (not carol, on `other`), then its heartbeat key.
    assert_eq!(
        render(std::mem::take(f.node.commands.output())),
        "HDEL pc:members 1 | HDEL pc:seen 1 | DEL pc:q:1 pc:p:1 pc:ph:1 | PUBLISH pc:presence L me 1 | DEL pc:server:me | PING"
    );
    f.commands(b":1\r\n:1\r\n:1\r\n:2\r\n");
    assert!(!f.node.has_stopped(), "the PING is not answered yet");
    f.commands(b":1\r\n+PONG\r\n");
    assert!(f.node.has_stopped());
    // Redis away: nothing to wait for.
    let mut away = Fixture::joined();
    let lost = away.node.commands.disconnected(away.now);
    away.node.link_lost(&mut away.ch, lost, &mut away.out);
    assert!(!away.node.leave_all(&away.ch));
}
