//! Many servers, one room (`--redis`): servers share members and messages through Redis.
//!
//! - ids: each server takes blocks of ids with `INCRBY pc:ids`, so sign-in stays
//!   synchronous and ids are unique across servers;
//! - presence: hash `pc:members` (id -> "SERVER NAME"), and channel `pc:presence` with
//!   `J SERVER ID NAME`, `L SERVER ID`, `M SERVER ID` (the member's requests moved there);
//!   every server mirrors the remote members and tells its own members of every change;
//! - last seen: hash `pc:seen` (id -> unix ms of the member's last request here, to about
//!   a second): the members seen in the last second (local, or remote ones posting through
//!   this server) go out in one pipelined script a second, not a command per request; the
//!   script skips members no longer in `pc:members`; a leave removes the field;
//! - liveness: `pc:server:SERVER` with a TTL, refreshed by a heartbeat; a server whose key
//!   expired is reaped by whichever live server wins `SET pc:reap:SERVER NX`;
//! - messages: list `pc:q:ID` per member (bounded: past `--max-queue` items the member is
//!   evicted cluster-wide), and `PUBLISH pc:wake:SERVER ID` to the server holding the
//!   member. Delivery is at least once: a held GET takes the member's pending message
//!   (list `pc:p:ID`, at most one) or else moves the next one from `pc:q:ID` there, and
//!   the pending one is deleted only once its answer is written whole to the GET's
//!   socket; an answer cut before that (the GET closed, this server died, Redis dropped
//!   the reply) leaves it pending, handed out first by whichever server the member's next
//!   `/wait` reaches. `pc:ph:ID` names the server holding the pending one: while that
//!   server lives and has not said whether it wrote it, no other hands it out.
//!
//! [`ClusterNode`] decides (no IO); [`Cluster`] owns its two sockets for the server loop.

pub mod link;
pub mod resp;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::peer_channel::{Action, ConnId, PeerChannel};
use crate::signaling::{PeerId, Response, Status};
pub use link::{LinkEvent, RedisLink, RedisUrl};
use resp::Value;

/// What a member's requests did that Redis must hear of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A sign-in, with its answer: sent once Redis has registered the member.
    Joined {
        id: PeerId,
        name: Box<[u8]>,
        answer: (ConnId, Vec<u8>),
    },
    Left {
        id: PeerId,
    },
    /// A member signed in elsewhere made a request here: it is ours now.
    Adopted {
        id: PeerId,
        name: Box<[u8]>,
    },
    /// A held GET: its messages are fetched from Redis.
    Waiting {
        id: PeerId,
    },
    /// A message to queue in Redis; `conn` is answered once Redis took it.
    Relay {
        conn: ConnId,
        from: PeerId,
        to: PeerId,
        content_type: Vec<u8>,
        body: Vec<u8>,
    },
}

/// The channel's part of the cluster: remote members, ids, and the events for Redis.
#[derive(Debug, Default)]
pub struct ClusterView {
    /// Members signed in on other servers, by id: their names.
    pub remote: BTreeMap<PeerId, Box<[u8]>>,
    pub events: Vec<ClusterEvent>,
    /// Redis is reachable and this server has joined: messages go through it.
    pub up: bool,
    ids: VecDeque<RangeInclusive<PeerId>>,
}

impl ClusterView {
    pub fn take_id(&mut self) -> Option<PeerId> {
        loop {
            let block = self.ids.front_mut()?;
            match block.next() {
                Some(id) => return Some(id),
                None => {
                    self.ids.pop_front();
                }
            }
        }
    }

    pub fn ids_left(&self) -> usize {
        self.ids.iter().map(|b| b.clone().count()).sum()
    }

    pub fn add_ids(&mut self, block: RangeInclusive<PeerId>) {
        self.ids.push_back(block);
    }

    fn highest_reserved(&self) -> PeerId {
        self.ids.back().map_or(0, |b| *b.end())
    }
}

/// Ids taken from Redis at a time.
pub const ID_BLOCK: PeerId = 256;

const PRESENCE: &[u8] = b"pc:presence";
const MEMBERS: &[u8] = b"pc:members";
const IDS: &[u8] = b"pc:ids";
const SEEN: &[u8] = b"pc:seen";

/// How often the members seen since the last write are written to `pc:seen`.
pub const SEEN_EVERY: Duration = Duration::from_secs(1);

/// Sets `pc:seen` field ARGV[i] (i >= 2) to ARGV[1] for each member still in `pc:members`.
const SEEN_SCRIPT: &[u8] = b"for i = 2, #ARGV do \
if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then \
redis.call('HSET', KEYS[2], ARGV[i], ARGV[1]) end end return 0";

/// Members per `pc:seen` write (a big server writes several).
const SEEN_PER_COMMAND: usize = 512;

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Lua: publishes member ARGV[2]'s id on the wake channel of its home server as
/// `pc:members` (KEYS[1]) says now, unless that home is this server (ARGV[1]), which
/// fetches by itself. Read in the same script as the change it announces, so a member
/// that just moved is woken where it is, not where another server's cache says it was.
macro_rules! wake_home_lua {
    () => {
        "local v = redis.call('HGET', KEYS[1], ARGV[2]) if v then \
local s = string.match(v, '^(%S+)') \
if s and s ~= ARGV[1] then redis.call('PUBLISH', 'pc:wake:' .. s, ARGV[2]) end end "
    };
}

/// Queues a message (ARGV[3]) for member ARGV[2] from member ARGV[4] if both are members
/// (-1 if either is not) and wakes the member's home server (ARGV[1] is this server).
/// Answers the new length of the queue.
const RELAY: &[u8] = concat!(
    "if redis.call('HEXISTS', KEYS[1], ARGV[4]) == 0 or \
redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return -1 end \
local n = redis.call('RPUSH', KEYS[2], ARGV[3]) ",
    wake_home_lua!(),
    "return n"
)
.as_bytes();

/// Member ARGV[1]'s home becomes ARGV[2] and the move ARGV[3] is published, at once.
const MOVE: &[u8] = b"redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) \
redis.call('PUBLISH', KEYS[2], ARGV[3]) return 0";

/// Raises the id counter to at least ARGV[1] (after Redis lost it in a restart).
const RAISE_IDS: &[u8] = b"local v = tonumber(redis.call('GET', KEYS[1]) or '0') \
if v < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end return 0";

fn queue_key(id: PeerId) -> Vec<u8> {
    format!("pc:q:{id}").into_bytes()
}

/// The message handed to a GET whose answer is not yet known to be written.
fn pending_key(id: PeerId) -> Vec<u8> {
    format!("pc:p:{id}").into_bytes()
}

/// Which server holds a member's pending message (took it, answer not yet known written).
fn holder_key(id: PeerId) -> Vec<u8> {
    format!("pc:ph:{id}").into_bytes()
}

/// A held GET's message (ARGV[1] is this server): the pending one (KEYS[2]) again if
/// there is one and no other live server holds it (its answer was cut, or its server
/// died), else the next from the queue (KEYS[1]), moved to pending; nil if none, or if
/// another live server still holds the pending one (its acknowledgement or release,
/// which wakes this server, comes next). Handing out a message its holder has written
/// but not yet acknowledged would deliver it twice.
const FETCH: &[u8] = b"local p = redis.call('LINDEX', KEYS[2], 0) \
if p then local h = redis.call('GET', KEYS[3]) \
if h and h ~= ARGV[1] and redis.call('EXISTS', 'pc:server:' .. h) == 1 then return false end \
redis.call('SET', KEYS[3], ARGV[1]) return p end \
p = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') \
if p then redis.call('SET', KEYS[3], ARGV[1]) end return p";

/// The pending message of member ARGV[2] was written whole by this server (ARGV[1]): it
/// leaves Redis, and if more are queued the member's home is woken (a GET there may have
/// found the message held). KEYS: members, queue, pending, holder.
const ACK: &[u8] = concat!(
    "if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 0 end \
redis.call('DEL', KEYS[3], KEYS[4]) \
if redis.call('LLEN', KEYS[2]) == 0 then return 0 end ",
    wake_home_lua!(),
    "return 0"
)
.as_bytes();

/// This server (ARGV[1]) took member ARGV[2]'s pending message but could not hand it out
/// whole: it stays pending, held by nobody, and the member's home is woken to take it.
/// KEYS: members, holder.
const RELEASE: &[u8] = concat!(
    "if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end \
redis.call('DEL', KEYS[2]) ",
    wake_home_lua!(),
    "return 0"
)
.as_bytes();

fn wake_channel(server: &str) -> Vec<u8> {
    format!("pc:wake:{server}").into_bytes()
}

fn server_key(server: &str) -> Vec<u8> {
    format!("pc:server:{server}").into_bytes()
}

/// What a command's reply is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    Ignore,
    IdBlock,
    Relay {
        conn: ConnId,
        seq: u64,
        to: PeerId,
    },
    /// A sign-in's answer, sent when its registration is acknowledged.
    Answer {
        conn: ConnId,
        seq: u64,
        bytes: Vec<u8>,
    },
    Fetch {
        id: PeerId,
    },
    Alive {
        server: String,
    },
    Reap {
        server: String,
    },
    /// `HGETALL pc:members`: after joining (add what is missing) or, with `sweep`, a
    /// while later (also drop what Redis no longer lists).
    Sync {
        sweep: bool,
    },
    /// The last command of a graceful stop: everything before it is done.
    Stopped,
}

/// A queued message as stored in `pc:q:ID`: `FROM\nCONTENT-TYPE\nBODY`.
fn encode_entry(from: PeerId, content_type: &[u8], body: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(body.len() + content_type.len() + 12);
    e.extend_from_slice(from.to_string().as_bytes());
    e.push(b'\n');
    e.extend_from_slice(content_type);
    e.push(b'\n');
    e.extend_from_slice(body);
    e
}

fn decode_entry(entry: &[u8]) -> Option<(PeerId, &[u8], &[u8])> {
    let mut parts = entry.splitn(3, |b| *b == b'\n');
    let from = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    Some((from, parts.next()?, parts.next()?))
}

fn parse_id(bytes: &[u8]) -> Option<PeerId> {
    std::str::from_utf8(bytes)
        .ok()?
        .parse()
        .ok()
        .filter(|id| *id > 0)
}

/// `pc:presence` messages.
#[derive(Debug, PartialEq, Eq)]
enum Presence<'a> {
    Join {
        server: &'a str,
        id: PeerId,
        name: &'a [u8],
    },
    Leave {
        server: &'a str,
        id: PeerId,
    },
    Move {
        server: &'a str,
        id: PeerId,
    },
}

fn parse_presence(msg: &[u8]) -> Option<Presence<'_>> {
    let mut parts = msg.splitn(4, |b| *b == b' ');
    let kind = parts.next()?;
    let server = std::str::from_utf8(parts.next()?).ok()?;
    let id = parse_id(parts.next()?)?;
    match kind {
        b"J" => Some(Presence::Join {
            server,
            id,
            name: parts.next()?,
        }),
        b"L" => Some(Presence::Leave { server, id }),
        b"M" => Some(Presence::Move { server, id }),
        _ => None,
    }
}

/// `pc:members` values: `SERVER NAME`.
fn parse_member(value: &[u8]) -> Option<(&str, &[u8])> {
    let at = value.iter().position(|b| *b == b' ')?;
    Some((std::str::from_utf8(&value[..at]).ok()?, &value[at + 1..]))
}

/// Timing and bounds of the cluster.
#[derive(Debug, Clone, Copy)]
pub struct ClusterConfig {
    /// How long a server's heartbeat key lives: a server silent this long is reaped.
    pub server_ttl: Duration,
    /// Messages a member may have waiting in Redis; past it the member is evicted.
    pub max_queue_items: usize,
}

impl ClusterConfig {
    /// From the member timeout: a dead server's members are reported gone within it.
    pub fn for_timeout(timeout: Duration, max_queue_items: usize) -> ClusterConfig {
        ClusterConfig {
            server_ttl: (timeout / 2).max(Duration::from_millis(500)),
            max_queue_items,
        }
    }

    fn heartbeat(&self) -> Duration {
        self.server_ttl / 3
    }
}

/// The cluster's decisions, without IO: link events and the channel's events in, commands
/// on the two links and calls on the channel out.
pub struct ClusterNode {
    pub server: String,
    config: ClusterConfig,
    pub commands: RedisLink<Tag>,
    pub subscriber: RedisLink<()>,
    subscribed: usize,
    /// Joined: both links up, registered, subscribed. Messages go through Redis.
    joined: bool,
    joined_at: Option<Instant>,
    sweep_at: Option<Instant>,
    next_beat: Instant,
    /// Which server holds each remote member.
    homes: HashMap<PeerId, String>,
    /// Members with a fetch on its way, and whether a wake-up came meanwhile: that
    /// fetch may have run before the message it announces was queued, so a nil answer is
    /// followed by another fetch.
    fetching: BTreeMap<PeerId, bool>,
    /// Members this server adopted whose `M` it has not yet heard back on `pc:presence`:
    /// another server's `M` heard before it was published before ours, so it is stale.
    moves_unheard: BTreeMap<PeerId, u32>,
    asking_ids: bool,
    /// An id block arrived since joining.
    has_ids: bool,
    /// Held GETs answered with a pending message, by connection: whose pending message
    /// to delete once the answer is written whole.
    taken: HashMap<ConnId, PeerId>,
    /// Relayed messages waiting for Redis, by connection: the request's number, so a
    /// connection key reused after a close is not answered.
    relays: HashMap<ConnId, u64>,
    next_relay: u64,
    /// Local members that left while Redis was away: removed from it on rejoining.
    left_while_away: Vec<PeerId>,
    /// Members that made a request here since `pc:seen` was last written.
    seen: BTreeSet<PeerId>,
    next_seen: Instant,
    /// A graceful stop's commands were all acknowledged.
    stopped: bool,
    /// Times Redis was lost, for metrics.
    pub outages: u64,
}

impl ClusterNode {
    pub fn new(url: RedisUrl, server: String, config: ClusterConfig, now: Instant) -> ClusterNode {
        ClusterNode {
            server,
            config,
            commands: RedisLink::new(url.clone(), false, now),
            subscriber: RedisLink::new(url, true, now),
            subscribed: 0,
            joined: false,
            joined_at: None,
            sweep_at: None,
            next_beat: now,
            homes: HashMap::new(),
            fetching: BTreeMap::new(),
            moves_unheard: BTreeMap::new(),
            asking_ids: false,
            has_ids: false,
            relays: HashMap::new(),
            taken: HashMap::new(),
            next_relay: 0,
            left_while_away: Vec::new(),
            seen: BTreeSet::new(),
            next_seen: now + SEEN_EVERY,
            stopped: false,
            outages: 0,
        }
    }

    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// Joined and holding ids to sign members in with: what `/metrics` reports as up.
    pub fn is_ready(&self) -> bool {
        self.joined && self.has_ids
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        crate::reactor::earliest([
            self.commands.poll_timeout(),
            self.subscriber.poll_timeout(),
            self.joined.then_some(self.next_beat),
            self.sweep_at,
            (self.joined && !self.seen.is_empty()).then_some(self.next_seen),
        ])
    }

    /// A graceful stop (SIGTERM, SIGINT): this server's members leave the cluster as if
    /// they had signed out (removed from Redis, their leaves published, so the other
    /// servers tell their members now rather than after the heartbeat runs out), and its
    /// heartbeat key goes. False if not joined (nothing to do); else [`Self::has_stopped`]
    /// says when Redis has done it all.
    pub fn leave_all(&mut self, ch: &PeerChannel) -> bool {
        if !self.joined {
            return false;
        }
        let ids: Vec<PeerId> = ch.local_members().map(|(id, _)| id).collect();
        log::info!("leaving the cluster: removing {} members", ids.len());
        for id in ids {
            self.announce_leave(id);
        }
        self.commands
            .send(&[b"DEL", &server_key(&self.server)], Tag::Ignore);
        self.commands.send(&[b"PING"], Tag::Stopped)
    }

    pub fn has_stopped(&self) -> bool {
        self.stopped
    }

    /// A connection closed: an answer due to it is dropped; a message it was answered
    /// with and did not take whole stays pending in Redis.
    pub fn connection_closed(&mut self, conn: ConnId) {
        self.relays.remove(&conn);
        if let Some(id) = self.taken.remove(&conn) {
            self.release(id);
        }
    }

    /// Gives a taken message back to whichever server the member's next GET reaches.
    fn release(&mut self, id: PeerId) {
        let id_text = id.to_string();
        self.commands.send(
            &[
                b"EVAL",
                RELEASE,
                b"2",
                MEMBERS,
                &holder_key(id),
                self.server.as_bytes(),
                id_text.as_bytes(),
            ],
            Tag::Ignore,
        );
    }

    /// The answer on `conn` is written whole: if it carried a pending message, that one
    /// is delivered and leaves Redis.
    pub fn answer_written(&mut self, conn: ConnId) {
        if let Some(id) = self.taken.remove(&conn) {
            let id_text = id.to_string();
            self.commands.send(
                &[
                    b"EVAL",
                    ACK,
                    b"4",
                    MEMBERS,
                    &queue_key(id),
                    &pending_key(id),
                    &holder_key(id),
                    self.server.as_bytes(),
                    id_text.as_bytes(),
                ],
                Tag::Ignore,
            );
        }
    }

    /// One of the links went down: serve locally until both are back.
    pub fn link_lost(&mut self, ch: &mut PeerChannel, lost: Vec<Tag>, out: &mut Vec<Action>) {
        for tag in lost {
            match tag {
                Tag::Relay { conn, seq, .. } if self.relays.get(&conn) == Some(&seq) => {
                    self.relays.remove(&conn);
                    out.push(message_not_sent(conn));
                }
                Tag::Fetch { id } => {
                    self.fetching.remove(&id);
                }
                // Signed in here all the same: registered again on rejoining.
                Tag::Answer { conn, seq, bytes } if self.relays.get(&conn) == Some(&seq) => {
                    self.relays.remove(&conn);
                    out.push(Action::Send { conn, bytes });
                }
                Tag::IdBlock => self.asking_ids = false,
                _ => {}
            }
        }
        if self.joined {
            self.outages += 1;
            log::warn!(
                "Redis unreachable: serving this server's {} members locally until it returns",
                ch.len()
            );
        }
        self.joined = false;
        self.joined_at = None;
        self.sweep_at = None;
        self.subscribed = 0;
        self.fetching.clear();
        self.moves_unheard.clear();
        self.asking_ids = false;
        self.has_ids = false;
        if let Some(view) = ch.cluster() {
            view.up = false;
        }
    }

    /// Handles events from the command link.
    pub fn on_command(
        &mut self,
        ev: LinkEvent<Tag>,
        ch: &mut PeerChannel,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        match ev {
            LinkEvent::Up => {
                log::info!(
                    "Redis command connection up ({}:{})",
                    self.commands.url().host,
                    self.commands.url().port
                );
                self.maybe_join(ch, now);
            }
            LinkEvent::Push(_) => {}
            LinkEvent::Reply(tag, value) => self.reply(tag, value, ch, now, out),
        }
    }

    /// Handles events from the subscriber link.
    pub fn on_subscriber(
        &mut self,
        ev: LinkEvent<()>,
        ch: &mut PeerChannel,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        match ev {
            LinkEvent::Up => {
                let wake = wake_channel(&self.server);
                self.subscribed = 0;
                self.subscriber.send(&[b"SUBSCRIBE", PRESENCE, &wake], ());
            }
            LinkEvent::Reply(..) => {}
            LinkEvent::Push(value) => {
                let Some(items) = value.array() else {
                    return;
                };
                match items.first().and_then(Value::bytes) {
                    Some(b"subscribe") => {
                        self.subscribed += 1;
                        if self.subscribed == 2 {
                            self.maybe_join(ch, now);
                        }
                    }
                    Some(b"message") => {
                        let (Some(channel), Some(payload)) = (
                            items.get(1).and_then(Value::bytes),
                            items.get(2).and_then(Value::bytes),
                        ) else {
                            return;
                        };
                        if channel == PRESENCE {
                            self.presence(payload, ch, now, out);
                        } else if let Some(id) = parse_id(payload) {
                            // A wake-up: a message for a member held here.
                            self.fetch(id, ch);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Both links up and subscribed: register again everything this server holds, then
    /// read who is there. Nothing is removed on this first read (other servers may be
    /// registering again too); a sweep one server TTL later drops what is gone.
    fn maybe_join(&mut self, ch: &mut PeerChannel, now: Instant) {
        if self.joined || !self.commands.is_up() || self.subscribed < 2 {
            return;
        }
        self.joined = true;
        self.joined_at = Some(now);
        self.sweep_at = Some(now + self.config.server_ttl);
        let floor = ch
            .highest_id()
            .max(ch.cluster().map_or(0, |v| v.highest_reserved()))
            .to_string();
        self.commands.send(
            &[b"EVAL", RAISE_IDS, b"1", IDS, floor.as_bytes()],
            Tag::Ignore,
        );
        self.beat(now);
        for id in std::mem::take(&mut self.left_while_away) {
            self.announce_leave(id);
        }
        let locals: Vec<(PeerId, Box<[u8]>)> =
            ch.local_members().map(|(id, n)| (id, n.into())).collect();
        for (id, name) in &locals {
            self.announce_join(*id, name, b"J");
            self.seen.insert(*id);
        }
        self.commands
            .send(&[b"HGETALL", MEMBERS], Tag::Sync { sweep: false });
        // Ids reserved before Redis went away are still this server's to hand out.
        self.has_ids = ch.cluster().is_some_and(|v| v.ids_left() > 0);
        self.top_up_ids(ch);
        if let Some(view) = ch.cluster() {
            view.up = true;
        }
        for id in ch.held_members().collect::<Vec<_>>() {
            self.fetch(id, ch);
        }
        log::info!(
            "joined the cluster as server {} with {} members",
            self.server,
            locals.len()
        );
    }

    fn announce_join(&mut self, id: PeerId, name: &[u8], kind: &[u8]) {
        let id_text = id.to_string();
        let mut value = self.server.as_bytes().to_vec();
        value.push(b' ');
        value.extend_from_slice(name);
        let mut msg = kind.to_vec();
        msg.push(b' ');
        msg.extend_from_slice(&value[..self.server.len()]);
        msg.push(b' ');
        msg.extend_from_slice(id_text.as_bytes());
        if kind == b"J" {
            msg.push(b' ');
            msg.extend_from_slice(name);
            self.commands
                .send(&[b"HSET", MEMBERS, id_text.as_bytes(), &value], Tag::Ignore);
            self.commands
                .send(&[b"PUBLISH", PRESENCE, &msg], Tag::Ignore);
        } else {
            // One script, so the order of moves on `pc:presence` is the order of homes
            // in `pc:members`, which the rule on unheard moves relies on.
            self.commands.send(
                &[
                    b"EVAL",
                    MOVE,
                    b"2",
                    MEMBERS,
                    PRESENCE,
                    id_text.as_bytes(),
                    &value,
                    &msg,
                ],
                Tag::Ignore,
            );
        }
    }

    fn announce_leave(&mut self, id: PeerId) {
        let id_text = id.to_string();
        self.commands
            .send(&[b"HDEL", MEMBERS, id_text.as_bytes()], Tag::Ignore);
        self.commands
            .send(&[b"HDEL", SEEN, id_text.as_bytes()], Tag::Ignore);
        self.seen.remove(&id);
        self.commands.send(
            &[b"DEL", &queue_key(id), &pending_key(id), &holder_key(id)],
            Tag::Ignore,
        );
        let msg = format!("L {} {id}", self.server);
        self.commands
            .send(&[b"PUBLISH", PRESENCE, msg.as_bytes()], Tag::Ignore);
    }

    /// Writes the time of the members seen since the last write: one pipelined script
    /// per `SEEN_PER_COMMAND` members, no reply awaited.
    fn write_seen(&mut self, now: Instant) {
        self.next_seen = now + SEEN_EVERY;
        let ms = unix_ms().to_string();
        let ids: Vec<String> = std::mem::take(&mut self.seen)
            .into_iter()
            .map(|id| id.to_string())
            .collect();
        for chunk in ids.chunks(SEEN_PER_COMMAND) {
            let mut args: Vec<&[u8]> =
                vec![b"EVAL", SEEN_SCRIPT, b"2", MEMBERS, SEEN, ms.as_bytes()];
            args.extend(chunk.iter().map(String::as_bytes));
            self.commands.send(&args, Tag::Ignore);
        }
    }

    fn beat(&mut self, now: Instant) {
        let ttl = self.config.server_ttl.as_millis().max(1).to_string();
        self.commands.send(
            &[
                b"SET",
                &server_key(&self.server),
                b"1",
                b"PX",
                ttl.as_bytes(),
            ],
            Tag::Ignore,
        );
        self.next_beat = now + self.config.heartbeat();
    }

    fn top_up_ids(&mut self, ch: &mut PeerChannel) {
        let Some(view) = ch.cluster() else { return };
        if !self.asking_ids && view.ids_left() < ID_BLOCK as usize / 2 {
            let block = ID_BLOCK.to_string();
            self.asking_ids = self
                .commands
                .send(&[b"INCRBY", IDS, block.as_bytes()], Tag::IdBlock);
        }
    }

    /// Takes the next message for a member held here, if none is on its way already.
    fn fetch(&mut self, id: PeerId, ch: &mut PeerChannel) {
        if !self.joined || !ch.is_held(id) {
            return;
        }
        if let Some(again) = self.fetching.get_mut(&id) {
            *again = true;
            return;
        }
        if self.commands.send(
            &[
                b"EVAL",
                FETCH,
                b"3",
                &queue_key(id),
                &pending_key(id),
                &holder_key(id),
                self.server.as_bytes(),
            ],
            Tag::Fetch { id },
        ) {
            self.fetching.insert(id, false);
        }
    }

    fn presence(
        &mut self,
        payload: &[u8],
        ch: &mut PeerChannel,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(p) = parse_presence(payload) else {
            log::debug!(
                "ignoring presence message {:?}",
                String::from_utf8_lossy(payload)
            );
            return;
        };
        match p {
            Presence::Move { server, id } if server == self.server => {
                if let Some(n) = self.moves_unheard.get_mut(&id) {
                    *n -= 1;
                    if *n == 0 {
                        self.moves_unheard.remove(&id);
                    }
                }
            }
            Presence::Move { server, id } if self.moves_unheard.contains_key(&id) => {
                log::debug!("member {id}: ignoring a move to {server} made before ours");
            }
            Presence::Join { server, .. }
            | Presence::Leave { server, .. }
            | Presence::Move { server, .. }
                if server == self.server => {}
            Presence::Join { server, id, name } => {
                if !ch.is_local(id) {
                    self.homes.insert(id, server.to_string());
                    ch.remote_joined(id, name, now, out);
                }
            }
            Presence::Leave { id, .. } => {
                self.homes.remove(&id);
                ch.remote_left(id, now, out);
            }
            Presence::Move { server, id } => {
                self.homes.insert(id, server.to_string());
                if ch.is_local(id) {
                    // What it had not been given here goes to the front of its list in
                    // Redis, for its new server to hand out.
                    let unread = ch.take_unread(id);
                    log::info!(
                        "member {id} moved to server {server}: {} unread items follow it",
                        unread.len()
                    );
                    if !unread.is_empty() {
                        let key = queue_key(id);
                        let entries: Vec<Vec<u8>> = unread
                            .iter()
                            .rev()
                            .map(|(from, ct, body)| encode_entry(*from, ct, body))
                            .collect();
                        let mut args: Vec<&[u8]> = vec![b"LPUSH", &key];
                        args.extend(entries.iter().map(Vec::as_slice));
                        self.commands.send(&args, Tag::Ignore);
                        let wake = wake_channel(server);
                        let id_text = id.to_string();
                        self.commands
                            .send(&[b"PUBLISH", &wake, id_text.as_bytes()], Tag::Ignore);
                    }
                    ch.moved_away(id, out);
                    self.fetching.remove(&id);
                }
            }
        }
    }

    fn reply(
        &mut self,
        tag: Tag,
        value: Value,
        ch: &mut PeerChannel,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if let Value::Error(e) = &value {
            log::warn!(
                "Redis answered {tag:?} with an error: {}",
                String::from_utf8_lossy(e)
            );
        }
        match tag {
            Tag::Ignore => {}
            Tag::Answer { conn, seq, bytes } => {
                if self.relays.get(&conn) == Some(&seq) {
                    self.relays.remove(&conn);
                    out.push(Action::Send { conn, bytes });
                }
            }
            Tag::IdBlock => {
                self.asking_ids = false;
                match value.int().and_then(|n| PeerId::try_from(n).ok()) {
                    Some(last) if last >= ID_BLOCK => {
                        if let Some(view) = ch.cluster() {
                            view.add_ids(last - ID_BLOCK + 1..=last);
                        }
                        self.has_ids = true;
                    }
                    _ => log::warn!("Redis gave no usable id block: {value:?}"),
                }
                self.top_up_ids(ch);
            }
            Tag::Relay { conn, seq, to } => {
                if self.relays.get(&conn) == Some(&seq) {
                    self.relays.remove(&conn);
                    let response = match value {
                        Value::Int(-1) => Response::text(Status::Error, b"Peer most likely gone."),
                        Value::Int(_) => Response::text(Status::Ok, b""),
                        _ => Response::text(Status::Unavailable, b"Redis refused the message\n"),
                    };
                    out.push(Action::Send {
                        conn,
                        bytes: response.to_bytes(),
                    });
                }
                let queued = value.int().unwrap_or(0);
                if queued > self.config.max_queue_items as i64 {
                    log::info!("member {to} has {queued} messages waiting in Redis: evicting it");
                    self.announce_leave(to);
                    self.homes.remove(&to);
                    ch.remote_left(to, now, out);
                } else if queued > 0 {
                    // The script woke its home if that is another server.
                    self.fetch(to, ch);
                }
            }
            Tag::Fetch { id } => {
                let again = self.fetching.remove(&id).unwrap_or(false);
                let Value::Bulk(Some(entry)) = value else {
                    if again {
                        self.fetch(id, ch);
                    }
                    return;
                };
                match decode_entry(&entry) {
                    Some((from, ct, body)) => {
                        // If its GET went while the message was on its way, the message
                        // stays pending, released for the member's next GET wherever it
                        // comes.
                        match ch.deliver_held(id, from, ct, body, now, out) {
                            Some(conn) => {
                                self.taken.insert(conn, id);
                            }
                            None => self.release(id),
                        }
                    }
                    None => {
                        log::warn!("dropping a malformed entry from pc:p:{id}");
                        self.commands
                            .send(&[b"DEL", &pending_key(id), &holder_key(id)], Tag::Ignore);
                    }
                }
            }
            Tag::Alive { server } => {
                if value == Value::Int(0) && self.reaping_allowed(now) {
                    let ttl = self.config.server_ttl.as_millis().max(1).to_string();
                    self.commands.send(
                        &[
                            b"SET",
                            format!("pc:reap:{server}").as_bytes(),
                            self.server.as_bytes(),
                            b"NX",
                            b"PX",
                            ttl.as_bytes(),
                        ],
                        Tag::Reap { server },
                    );
                }
            }
            Tag::Reap { server } => {
                if value.bytes() == Some(b"OK") {
                    let gone: Vec<PeerId> = self
                        .homes
                        .iter()
                        .filter(|(_, home)| **home == server)
                        .map(|(id, _)| *id)
                        .collect();
                    log::warn!(
                        "server {server} stopped its heartbeat: removing its {} members",
                        gone.len()
                    );
                    for id in gone {
                        self.announce_leave(id);
                        self.homes.remove(&id);
                        ch.remote_left(id, now, out);
                    }
                }
            }
            Tag::Sync { sweep } => self.sync(value, sweep, ch, now, out),
            Tag::Stopped => self.stopped = true,
        }
    }

    /// A server that just joined waits one TTL before it reaps anyone: after a Redis
    /// restart every heartbeat key is gone until each server beats again.
    fn reaping_allowed(&self, now: Instant) -> bool {
        self.joined_at
            .is_some_and(|t| now >= t + self.config.server_ttl)
    }

    fn sync(
        &mut self,
        value: Value,
        sweep: bool,
        ch: &mut PeerChannel,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(items) = value.array() else {
            return;
        };
        let mut listed = BTreeSet::new();
        for pair in items.chunks_exact(2) {
            let (Some(id), Some((server, name))) = (
                pair[0].bytes().and_then(parse_id),
                pair[1].bytes().and_then(parse_member),
            ) else {
                continue;
            };
            listed.insert(id);
            if server != self.server && !ch.is_local(id) {
                self.homes.insert(id, server.to_string());
                ch.remote_joined(id, name, now, out);
            }
        }
        if sweep {
            let gone: Vec<PeerId> = self
                .homes
                .keys()
                .filter(|id| !listed.contains(id))
                .copied()
                .collect();
            for id in gone {
                self.homes.remove(&id);
                ch.remote_left(id, now, out);
            }
        }
    }

    /// Carries the channel's events to Redis, and the timers.
    pub fn drive(&mut self, ch: &mut PeerChannel, now: Instant, out: &mut Vec<Action>) {
        let events = ch
            .cluster()
            .map(|v| std::mem::take(&mut v.events))
            .unwrap_or_default();
        for ev in events {
            match ev {
                ClusterEvent::Joined {
                    id,
                    name,
                    answer: (conn, bytes),
                } => {
                    self.seen.insert(id);
                    if self.joined {
                        self.announce_join(id, &name, b"J");
                        let seq = self.next_relay;
                        self.next_relay += 1;
                        // PING after the HSET and PUBLISH: its reply says both are done.
                        self.commands
                            .send(&[b"PING"], Tag::Answer { conn, seq, bytes });
                        self.relays.insert(conn, seq);
                    } else {
                        out.push(Action::Send { conn, bytes });
                    }
                }
                ClusterEvent::Adopted { id, name } => {
                    self.seen.insert(id);
                    self.homes.remove(&id);
                    if self.joined {
                        self.announce_join(id, &name, b"M");
                        *self.moves_unheard.entry(id).or_insert(0) += 1;
                    }
                }
                ClusterEvent::Left { id } => {
                    self.seen.remove(&id);
                    if self.joined {
                        self.announce_leave(id);
                    } else {
                        self.left_while_away.push(id);
                    }
                }
                ClusterEvent::Waiting { id } => {
                    self.seen.insert(id);
                    self.fetch(id, ch);
                }
                ClusterEvent::Relay {
                    conn,
                    from,
                    to,
                    content_type,
                    body,
                } => {
                    self.seen.insert(from);
                    let seq = self.next_relay;
                    self.next_relay += 1;
                    let entry = encode_entry(from, &content_type, &body);
                    let (from_text, to_text) = (from.to_string(), to.to_string());
                    let args: [&[u8]; 9] = [
                        b"EVAL",
                        RELAY,
                        b"2",
                        MEMBERS,
                        &queue_key(to),
                        self.server.as_bytes(),
                        to_text.as_bytes(),
                        &entry,
                        from_text.as_bytes(),
                    ];
                    if self.commands.send(&args, Tag::Relay { conn, seq, to }) {
                        self.relays.insert(conn, seq);
                    } else {
                        out.push(message_not_sent(conn));
                    }
                }
            }
        }
        if self.joined && now >= self.next_beat {
            self.beat(now);
            let servers: BTreeSet<String> = self.homes.values().cloned().collect();
            for server in servers {
                self.commands
                    .send(&[b"EXISTS", &server_key(&server)], Tag::Alive { server });
            }
            // A wake-up sent to a member's old server is not lost for good.
            for id in ch.held_members().collect::<Vec<_>>() {
                self.fetch(id, ch);
            }
        }
        if self.joined && self.sweep_at.is_some_and(|t| now >= t) {
            self.sweep_at = None;
            self.commands
                .send(&[b"HGETALL", MEMBERS], Tag::Sync { sweep: true });
        }
        if self.joined && now >= self.next_seen && !self.seen.is_empty() {
            self.write_seen(now);
        }
        if self.joined {
            self.top_up_ids(ch);
        }
    }
}

/// The two Redis sockets as the server loop drives them.
pub struct Cluster {
    pub node: ClusterNode,
    addr: SocketAddr,
    commands: Option<TcpStream>,
    subscriber: Option<TcpStream>,
    events: Vec<LinkEvent<Tag>>,
    pushes: Vec<LinkEvent<()>>,
}

pub const COMMANDS_TOKEN: Token = crate::reactor::REDIS_TOKEN;
pub const SUBSCRIBER_TOKEN: Token = crate::reactor::REDIS_SUB_TOKEN;

impl Cluster {
    /// Resolves Redis's address once, at start-up (the only blocking look-up).
    pub fn new(
        url: RedisUrl,
        port: u16,
        config: ClusterConfig,
        now: Instant,
    ) -> io::Result<Cluster> {
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| io::Error::new(e.kind(), format!("--redis host {:?}: {e}", url.host)))?
            .next()
            .ok_or_else(|| {
                io::Error::other(format!("--redis host {:?} has no address", url.host))
            })?;
        let server = format!("{port}-{:08x}", rand::random::<u32>());
        Ok(Cluster {
            node: ClusterNode::new(url, server, config, now),
            addr,
            commands: None,
            subscriber: None,
            events: Vec::new(),
            pushes: Vec::new(),
        })
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.node.poll_timeout()
    }

    /// Readiness on one of the two sockets.
    pub fn socket_event(
        &mut self,
        token: Token,
        registry: &Registry,
        ch: &mut PeerChannel,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let mut buf = [0u8; 64 * 1024];
        let is_commands = token == COMMANDS_TOKEN;
        let mut failed: Option<String> = None;
        loop {
            let stream = if is_commands {
                self.commands.as_mut()
            } else {
                self.subscriber.as_mut()
            };
            let Some(stream) = stream else { return };
            match stream.read(&mut buf) {
                Ok(0) => {
                    failed = Some("Redis closed the connection".into());
                    break;
                }
                Ok(n) => {
                    let r = if is_commands {
                        self.node.commands.received(&buf[..n], &mut self.events)
                    } else {
                        self.node.subscriber.received(&buf[..n], &mut self.pushes)
                    };
                    if let Err(e) = r {
                        failed = Some(e.to_string());
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        for ev in std::mem::take(&mut self.events) {
            self.node.on_command(ev, ch, now, out);
        }
        for ev in std::mem::take(&mut self.pushes) {
            self.node.on_subscriber(ev, ch, now, out);
        }
        if let Some(why) = failed {
            self.drop_link(is_commands, &why, registry, ch, now, out);
        }
    }

    fn drop_link(
        &mut self,
        is_commands: bool,
        why: &str,
        registry: &Registry,
        ch: &mut PeerChannel,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let stream = if is_commands {
            self.commands.take()
        } else {
            self.subscriber.take()
        };
        if let Some(mut s) = stream {
            let _ = registry.deregister(&mut s);
        }
        let lost = if is_commands {
            self.node.commands.disconnected(now)
        } else {
            self.node.subscriber.disconnected(now);
            Vec::new()
        };
        log::warn!(
            "Redis {} connection lost: {why}",
            if is_commands { "command" } else { "subscriber" }
        );
        self.node.link_lost(ch, lost, out);
    }

    /// Connects what is due, carries the channel's events and timers, writes what waits.
    pub fn drive(
        &mut self,
        registry: &Registry,
        ch: &mut PeerChannel,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        for is_commands in [true, false] {
            let wants = if is_commands {
                self.node.commands.wants_connect(now)
            } else {
                self.node.subscriber.wants_connect(now)
            };
            if !wants {
                continue;
            }
            let token = if is_commands {
                COMMANDS_TOKEN
            } else {
                SUBSCRIBER_TOKEN
            };
            let made = TcpStream::connect(self.addr).and_then(|mut s| {
                let _ = s.set_nodelay(true);
                registry.register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
                Ok(s)
            });
            match made {
                Ok(s) => {
                    if is_commands {
                        self.commands = Some(s);
                        self.node.commands.connecting();
                    } else {
                        self.subscriber = Some(s);
                        self.node.subscriber.connecting();
                    }
                }
                Err(e) => {
                    if is_commands {
                        self.node.commands.disconnected(now);
                    } else {
                        self.node.subscriber.disconnected(now);
                    }
                    log::debug!("cannot connect to Redis at {}: {e}", self.addr);
                }
            }
        }
        self.node.drive(ch, now, out);
        self.flush(registry, ch, now, out);
    }

    /// Writes what the links hold, as far as the sockets take it.
    pub fn flush(
        &mut self,
        registry: &Registry,
        ch: &mut PeerChannel,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        for is_commands in [true, false] {
            let (stream, output) = if is_commands {
                (self.commands.as_mut(), self.node.commands.output())
            } else {
                (self.subscriber.as_mut(), self.node.subscriber.output())
            };
            let Some(stream) = stream else { continue };
            let mut written = 0;
            let mut failed = None;
            while written < output.len() {
                match stream.write(&output[written..]) {
                    Ok(0) => {
                        failed = Some("Redis took no bytes".to_string());
                        break;
                    }
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // Still connecting: written once the socket is writable.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            output.drain(..written);
            if let Some(why) = failed {
                self.drop_link(is_commands, &why, registry, ch, now, out);
            }
        }
    }
}

/// The `503` a `/message` gets when Redis went away before it was queued there.
fn message_not_sent(conn: ConnId) -> Action {
    Action::Send {
        conn,
        bytes: Response::text(Status::Unavailable, b"Redis went away: message not sent\n")
            .to_bytes(),
    }
}

#[cfg(test)]
mod tests;
