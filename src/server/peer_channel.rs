//! The member registry (after the original's `PeerChannel` and `ChannelMember`): sign in,
//! hanging GETs, message routing, queues, notifications, time-outs. No IO: requests come in
//! with the connection they arrived on, [`Action`]s go out for the loop to carry out.
//!
//! Joins and leaves go into one [`PresenceLog`] that every member reads with its own cursor
//! (fan-out on read), so a member that never waits costs a cursor, not a copy of every
//! later entry line: N members that never wait hold O(N) memory, not O(N²).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::cluster::{ClusterEvent, ClusterView};
use super::data_socket::{Method, Request};
use super::metrics::Eviction;
use crate::signaling::peers::write_entry;
use crate::signaling::{
    find_arg, parse_peer_id, split_target, PeerId, Response, Status, MAX_NAME_LEN,
};

/// The loop's name for a connection (its slab key).
pub type ConnId = usize;

/// What the loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write the response on the connection, then close it.
    Send { conn: ConnId, bytes: Vec<u8> },
    /// Close the connection without an answer (a replaced hanging GET).
    Close { conn: ConnId },
}

/// What became of the request's own connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Answered by a `Send` action; close once written.
    Answered,
    /// Held open as the member's hanging GET.
    Held(PeerId),
    /// Answered, and the server was asked to quit (only with `--allow-quit`).
    Quit,
    /// Answered later, when Redis has taken the message (`--redis` only).
    Pending,
}

/// Per-member and timing bounds.
#[derive(Debug, Clone, Copy)]
pub struct ChannelConfig {
    /// A member without a hanging GET for longer than this is removed.
    pub timeout: Duration,
    pub max_queue_items: usize,
    pub max_queue_bytes: usize,
    pub allow_quit: bool,
    /// Serve the web client at `/`.
    pub serve_web: bool,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            timeout: Duration::from_secs(30),
            max_queue_items: 10_000,
            max_queue_bytes: 16 << 20,
            allow_quit: false,
            serve_web: true,
        }
    }
}

/// A message waiting for its recipient's next hanging GET.
#[derive(Debug)]
struct QueuedMessage {
    from: PeerId,
    /// The presence log's end when it was queued: it comes after every entry before that.
    after: u64,
    content_type: Vec<u8>,
    body: Vec<u8>,
}

impl QueuedMessage {
    fn size(&self) -> usize {
        self.content_type.len() + self.body.len()
    }
}

/// Bytes a log entry costs beyond its line (its slot in the deque).
const NOTICE_OVERHEAD: usize = 32;

/// Every join and leave, in order, from the oldest any member has yet to read. Entry `seq`
/// is at `entries[seq - base]`; `sizes[i]` is the bytes of entries before `i`, so a
/// member's unread bytes come from two look-ups.
#[derive(Debug, Default)]
struct PresenceLog {
    entries: VecDeque<Box<[u8]>>,
    /// Running byte count at each entry (bytes of every entry logged before it).
    before: VecDeque<u64>,
    base: u64,
    /// Bytes of every entry ever logged.
    total: u64,
    /// Members' cursors, counted: the smallest says what may be dropped.
    cursors: BTreeMap<u64, usize>,
}

impl PresenceLog {
    fn end(&self) -> u64 {
        self.base + self.entries.len() as u64
    }

    fn push(&mut self, entry: Box<[u8]>) {
        self.before.push_back(self.total);
        self.total += (entry.len() + NOTICE_OVERHEAD) as u64;
        self.entries.push_back(entry);
        self.trim();
    }

    fn get(&self, seq: u64) -> Option<&[u8]> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.entries.get(i).map(|e| &e[..])
    }

    /// Bytes from `seq` to the end: what a member at that cursor has yet to read.
    fn unread_bytes(&self, seq: u64) -> usize {
        let i = seq.saturating_sub(self.base) as usize;
        let at = self.before.get(i).copied().unwrap_or(self.total);
        (self.total - at) as usize
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        self.unread_bytes(self.base)
    }

    fn add_cursor(&mut self, seq: u64) {
        *self.cursors.entry(seq).or_default() += 1;
    }

    fn remove_cursor(&mut self, seq: u64) {
        if let Some(n) = self.cursors.get_mut(&seq) {
            *n -= 1;
            if *n == 0 {
                self.cursors.remove(&seq);
            }
        }
        self.trim();
    }

    fn move_cursor(&mut self, from: u64, to: u64) {
        self.move_cursors(from, to, 1);
    }

    /// Moves `n` cursors at `from` to `to`.
    fn move_cursors(&mut self, from: u64, to: u64, n: usize) {
        if from == to || n == 0 {
            return;
        }
        *self.cursors.entry(to).or_default() += n;
        if let Some(count) = self.cursors.get_mut(&from) {
            *count = count.saturating_sub(n);
            if *count == 0 {
                self.cursors.remove(&from);
            }
        }
        self.trim();
    }

    /// Drops the entries every member has read.
    fn trim(&mut self) {
        let keep_from = self
            .cursors
            .first_key_value()
            .map_or(self.end(), |(seq, _)| *seq);
        while self.base < keep_from && !self.entries.is_empty() {
            self.entries.pop_front();
            self.before.pop_front();
            self.base += 1;
        }
    }
}

/// What a member's next hanging GET is answered with.
enum Next {
    Notice(u64),
    Message,
}

/// One signed-in member.
#[derive(Debug)]
pub struct ChannelMember {
    pub id: PeerId,
    name: Box<[u8]>,
    waiting: Option<ConnId>,
    /// When the hanging GET went away (or the member signed in without one).
    absent_since: Option<Instant>,
    /// The next presence-log entry this member has not been told.
    cursor: u64,
    queue: VecDeque<QueuedMessage>,
    /// Bytes of its queued messages.
    queued_bytes: usize,
}

impl ChannelMember {
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    fn entry(&self, connected: bool) -> Box<[u8]> {
        let mut line = Vec::with_capacity(self.name.len() + 14);
        write_entry(&mut line, &self.name, self.id, connected);
        line.into()
    }

    /// What is due next, in the order it happened: a message queued before the entry at
    /// the cursor goes first.
    fn next(&self, log: &PresenceLog) -> Option<Next> {
        match self.queue.front() {
            Some(m) if m.after <= self.cursor => Some(Next::Message),
            _ if self.cursor < log.end() => Some(Next::Notice(self.cursor)),
            Some(_) => Some(Next::Message),
            None => None,
        }
    }

    /// Items waiting: messages and unread entries.
    fn pending(&self, log: &PresenceLog) -> usize {
        self.queue.len() + (log.end() - self.cursor) as usize
    }

    /// An entry line as the answer to this member's hanging GET.
    fn render_notice(&self, entry: &[u8]) -> Vec<u8> {
        Response {
            status: Status::Ok,
            content_type: b"text/plain",
            pragma: Some(self.id),
            body: entry,
        }
        .to_bytes()
    }
}

fn render_message(m: &QueuedMessage) -> Vec<u8> {
    Response {
        status: Status::Ok,
        content_type: &m.content_type,
        pragma: Some(m.from),
        body: &m.body,
    }
    .to_bytes()
}

/// Why a member is being removed: for the log, and the server's own removals for metrics.
#[derive(Debug, Clone, Copy)]
enum Removal {
    SignedOut,
    Evicted(Eviction),
    /// Signed out, timed out or evicted through another server (`--redis`).
    Elsewhere,
}

/// The registry of members.
#[derive(Debug)]
pub struct PeerChannel {
    config: ChannelConfig,
    members: BTreeMap<PeerId, ChannelMember>,
    /// Members without a hanging GET, by the time it went away: the time-out order.
    absent: BTreeSet<(Instant, PeerId)>,
    next_id: PeerId,
    log: PresenceLog,
    /// Sum of every member's `queued_bytes`, and the number of queued messages.
    queued_bytes: usize,
    queued_messages: usize,
    /// Members removed by the server, by cause (in [`Eviction`] order).
    evictions: [u64; 3],
    /// Members on other servers and what Redis must be told (`--redis` only).
    cluster: Option<ClusterView>,
}

/// What the channel holds, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    pub members: usize,
    /// Bytes of queued messages (bodies and content types).
    pub queued_bytes: usize,
    /// Bytes of the presence log (entries some member has yet to read).
    pub presence_log_bytes: usize,
    pub queued_messages: usize,
    pub timed_out: u64,
    pub queue_overflows: u64,
    pub memory_evictions: u64,
}

fn respond(out: &mut Vec<Action>, conn: ConnId, response: Response<'_>) {
    out.push(Action::Send {
        conn,
        bytes: response.to_bytes(),
    });
}

fn error(out: &mut Vec<Action>, conn: ConnId, status: Status, body: &str) -> Disposition {
    respond(out, conn, Response::text(status, body.as_bytes()));
    Disposition::Answered
}

fn peer_gone(out: &mut Vec<Action>, conn: ConnId) -> Disposition {
    error(out, conn, Status::Error, "Peer most likely gone.")
}

impl PeerChannel {
    pub fn new(config: ChannelConfig) -> PeerChannel {
        PeerChannel {
            config,
            members: BTreeMap::new(),
            absent: BTreeSet::new(),
            next_id: 1,
            log: PresenceLog::default(),
            queued_bytes: 0,
            queued_messages: 0,
            evictions: [0; 3],
            cluster: None,
        }
    }

    /// Clustering on (`--redis`): ids come from blocks Redis hands out, members on other
    /// servers are listed and notified like local ones, messages go through Redis.
    pub fn enable_cluster(&mut self) {
        self.cluster = Some(ClusterView::default());
    }

    pub fn cluster(&mut self) -> Option<&mut ClusterView> {
        self.cluster.as_mut()
    }

    /// A member signed in or went away on another server.
    pub fn remote_joined(&mut self, id: PeerId, name: &[u8], now: Instant, out: &mut Vec<Action>) {
        let Some(view) = self.cluster.as_mut() else {
            return;
        };
        if self.members.contains_key(&id) || view.remote.contains_key(&id) {
            return;
        }
        view.remote.insert(id, name.into());
        let mut line = Vec::with_capacity(name.len() + 14);
        write_entry(&mut line, name, id, true);
        self.notify_all(line.into(), now, out);
    }

    /// A member left through another server (or its server died).
    pub fn remote_left(&mut self, id: PeerId, now: Instant, out: &mut Vec<Action>) {
        let Some(view) = self.cluster.as_mut() else {
            return;
        };
        if let Some(name) = view.remote.remove(&id) {
            let mut line = Vec::with_capacity(name.len() + 14);
            write_entry(&mut line, &name, id, false);
            self.notify_all(line.into(), now, out);
        } else {
            self.remove(id, Removal::Elsewhere, now, out);
        }
    }

    /// A local member's requests now go to another server: it is forgotten here without
    /// a leave notice (its held GET, if any, is closed) and listed as remote.
    pub fn moved_away(&mut self, id: PeerId, out: &mut Vec<Action>) {
        let Some(member) = self.detach(id, out) else {
            return;
        };
        if let Some(view) = self.cluster.as_mut() {
            view.remote.insert(id, member.name);
        }
    }

    /// Takes everything a member has not yet been given, in order, as (from, content type,
    /// body): notices (from itself, as a hanging GET renders them) and queued messages.
    /// For a member moving to another server, which then hands them out from Redis.
    pub fn take_unread(&mut self, id: PeerId) -> Vec<(PeerId, Vec<u8>, Vec<u8>)> {
        let mut items = Vec::new();
        while let Some(member) = self.members.get_mut(&id) {
            match member.next(&self.log) {
                None => break,
                Some(Next::Notice(seq)) => {
                    let entry = self.log.get(seq).unwrap_or_default().to_vec();
                    member.cursor = seq + 1;
                    self.log.move_cursor(seq, seq + 1);
                    items.push((id, b"text/plain".to_vec(), entry));
                }
                Some(Next::Message) => {
                    let Some(m) = member.queue.pop_front() else {
                        break;
                    };
                    member.queued_bytes -= m.size();
                    self.queued_bytes -= m.size();
                    self.queued_messages -= 1;
                    items.push((m.from, m.content_type, m.body));
                }
            }
        }
        items
    }

    /// Answers `to`'s held GET with a message from Redis: the GET's connection, or `None`
    /// if it holds none (the message then stays in Redis).
    pub fn deliver_held(
        &mut self,
        to: PeerId,
        from: PeerId,
        content_type: &[u8],
        body: &[u8],
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Option<ConnId> {
        let conn = self.members.get_mut(&to).and_then(|m| m.waiting.take())?;
        out.push(Action::Send {
            conn,
            bytes: Response {
                status: Status::Ok,
                content_type,
                pragma: Some(from),
                body,
            }
            .to_bytes(),
        });
        self.answered(to, now);
        Some(conn)
    }

    /// Local members holding a GET (the cluster fetches their messages from Redis).
    pub fn held_members(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.members
            .values()
            .filter(|m| m.waiting.is_some())
            .map(|m| m.id)
    }

    /// A local member holding a GET.
    pub fn is_held(&self, id: PeerId) -> bool {
        self.members.get(&id).is_some_and(|m| m.waiting.is_some())
    }

    pub fn is_local(&self, id: PeerId) -> bool {
        self.members.contains_key(&id)
    }

    /// Every local member's id and name (to register them again after Redis returns).
    pub fn local_members(&self) -> impl Iterator<Item = (PeerId, &[u8])> + '_ {
        self.members.values().map(|m| (m.id, &m.name[..]))
    }

    /// The largest id this server knows of, local or remote.
    pub fn highest_id(&self) -> PeerId {
        let local = self.members.keys().next_back().copied().unwrap_or(0);
        let remote = self
            .cluster
            .as_ref()
            .and_then(|v| v.remote.keys().next_back().copied())
            .unwrap_or(0);
        local.max(remote)
    }

    /// Adopts a member known as remote whose request came here: it becomes local, reading
    /// the presence log from now on.
    fn adopt(&mut self, id: PeerId, now: Instant) -> bool {
        let Some(view) = self.cluster.as_mut() else {
            return false;
        };
        let Some(name) = view.remote.remove(&id) else {
            return false;
        };
        view.events.push(ClusterEvent::Adopted {
            id,
            name: name.clone(),
        });
        let cursor = self.log.end();
        self.log.add_cursor(cursor);
        self.absent.insert((now, id));
        self.members.insert(
            id,
            ChannelMember {
                id,
                name,
                waiting: None,
                absent_since: Some(now),
                cursor,
                queue: VecDeque::new(),
                queued_bytes: 0,
            },
        );
        log::info!("member {id} adopted from another server");
        true
    }

    pub fn stats(&self) -> ChannelStats {
        ChannelStats {
            members: self.members.len(),
            queued_bytes: self.queued_bytes,
            presence_log_bytes: self.log.bytes(),
            queued_messages: self.queued_messages,
            timed_out: self.evictions[Eviction::TimedOut as usize],
            queue_overflows: self.evictions[Eviction::QueueOverflow as usize],
            memory_evictions: self.evictions[Eviction::MemoryBudget as usize],
        }
    }

    /// Bytes of undelivered data: queued messages and the presence log.
    pub fn memory(&self) -> usize {
        self.queued_bytes + self.log.bytes()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn member(&self, id: PeerId) -> Option<&ChannelMember> {
        self.members.get(&id)
    }

    /// Handles one complete request that arrived on `conn`.
    pub fn handle_request(
        &mut self,
        conn: ConnId,
        req: &Request,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Disposition {
        let (path, args) = split_target(&req.target);
        match (req.method, path) {
            (Method::Options, _) => {
                respond(out, conn, Response::text(Status::Ok, b""));
                Disposition::Answered
            }
            (Method::Get, "/sign_in") => self.sign_in(conn, args, now, out),
            (Method::Get, "/wait") => match self.peer_arg(args, "peer_id") {
                Err(why) => error(out, conn, Status::BadRequest, why),
                Ok(id) if !self.members.contains_key(&id) && !self.adopt(id, now) => {
                    peer_gone(out, conn)
                }
                Ok(id) => self.wait(conn, id, now, out),
            },
            (Method::Get, "/sign_out") => match self.peer_arg(args, "peer_id") {
                Err(why) => error(out, conn, Status::BadRequest, why),
                Ok(id) if !self.members.contains_key(&id) && !self.adopt(id, now) => {
                    peer_gone(out, conn)
                }
                Ok(id) => {
                    self.remove(id, Removal::SignedOut, now, out);
                    respond(out, conn, Response::text(Status::Ok, b""));
                    Disposition::Answered
                }
            },
            (Method::Post, "/message") => {
                let ids = self
                    .peer_arg(args, "peer_id")
                    .and_then(|from| self.peer_arg(args, "to").map(|to| (from, to)));
                match ids {
                    Err(why) => error(out, conn, Status::BadRequest, why),
                    Ok((from, to)) => self.message(conn, from, to, req, now, out),
                }
            }
            (Method::Get, path) if self.config.serve_web && super::web::asset(path).is_some() => {
                let (content_type, body) = super::web::asset(path).unwrap_or((b"", b""));
                respond(
                    out,
                    conn,
                    Response {
                        status: Status::Ok,
                        content_type,
                        pragma: None,
                        body,
                    },
                );
                Disposition::Answered
            }
            (_, "/quit") if self.config.allow_quit => {
                respond(out, conn, Response::text(Status::Ok, b"Quitting...\n"));
                Disposition::Quit
            }
            (_, "/quit") => error(
                out,
                conn,
                Status::Forbidden,
                "/quit is disabled; start the server with --allow-quit\n",
            ),
            (Method::Other, _) => error(
                out,
                conn,
                Status::MethodNotAllowed,
                "only GET, POST and OPTIONS are served\n",
            ),
            (Method::Get | Method::Post, "/sign_in" | "/wait" | "/sign_out" | "/message") => error(
                out,
                conn,
                Status::MethodNotAllowed,
                "wrong method for this path\n",
            ),
            _ => error(out, conn, Status::NotFound, "no such path\n"),
        }
    }

    fn peer_arg(&self, args: &str, key: &'static str) -> Result<PeerId, &'static str> {
        let text = find_arg(args, key).ok_or(match key {
            "to" => "missing to argument\n",
            _ => "missing peer_id argument\n",
        })?;
        parse_peer_id(text).ok_or(match key {
            "to" => "to is not a peer id\n",
            _ => "peer_id is not a peer id\n",
        })
    }

    fn sign_in(
        &mut self,
        conn: ConnId,
        args: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Disposition {
        let id = match self.cluster.as_mut() {
            None => {
                let id = self.next_id;
                self.next_id = self.next_id.wrapping_add(1).max(1);
                id
            }
            Some(view) => match view.take_id() {
                Some(id) => id,
                None => {
                    return error(
                        out,
                        conn,
                        Status::Unavailable,
                        "no member ids from Redis yet: try again\n",
                    )
                }
            },
        };
        let mut name: Vec<u8> = args.as_bytes().to_vec();
        if name.is_empty() {
            name = format!("peer_{id}").into_bytes();
        } else {
            name.truncate(MAX_NAME_LEN);
            for b in name.iter_mut().filter(|b| **b == b',') {
                *b = b'_';
            }
        }
        let mut member = ChannelMember {
            id,
            name: name.into_boxed_slice(),
            waiting: None,
            absent_since: Some(now),
            cursor: 0,
            queue: VecDeque::new(),
            queued_bytes: 0,
        };
        let entry = member.entry(true);
        let mut body = Vec::with_capacity(entry.len() * (self.members.len() + 1));
        body.extend_from_slice(&entry);
        for other in self.members.values() {
            write_entry(&mut body, &other.name, other.id, true);
        }
        if let Some(view) = self.cluster.as_mut() {
            for (id, name) in &view.remote {
                write_entry(&mut body, name, *id, true);
            }
        }

        log::info!(
            "member {id} {:?} signed in ({} members)",
            String::from_utf8_lossy(&member.name),
            self.members.len() + 1
        );
        self.notify_all(entry, now, out);
        // Its own join is behind it: it starts reading after it.
        member.cursor = self.log.end();
        self.log.add_cursor(member.cursor);
        self.absent.insert((now, id));
        let name = member.name.clone();
        self.members.insert(id, member);
        let answer = Response {
            status: Status::Added,
            content_type: b"text/plain",
            pragma: Some(id),
            body: &body,
        }
        .to_bytes();
        if let Some(view) = self.cluster.as_mut() {
            // Answered once Redis lists the member, so its next request finds it on any
            // server.
            view.events.push(ClusterEvent::Joined {
                id,
                name,
                answer: (conn, answer),
            });
            return Disposition::Pending;
        }
        out.push(Action::Send {
            conn,
            bytes: answer,
        });
        Disposition::Answered
    }

    /// A request from member `id` arrived: it is present. A member without a hanging GET
    /// counts as absent from now on, not from when its last GET was held, so one that keeps
    /// polling (or posting) is never timed out however full its queue keeps its GETs.
    fn seen(&mut self, id: PeerId, now: Instant) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        if member.waiting.is_some() {
            return;
        }
        if let Some(since) = member.absent_since.replace(now) {
            self.absent.remove(&(since, id));
        }
        self.absent.insert((now, id));
    }

    /// Takes the member's next item, rendered as the answer to its hanging GET.
    fn take_next(&mut self, id: PeerId) -> Option<Vec<u8>> {
        let member = self.members.get_mut(&id)?;
        match member.next(&self.log)? {
            Next::Notice(seq) => {
                let bytes = member.render_notice(self.log.get(seq)?);
                member.cursor = seq + 1;
                self.log.move_cursor(seq, seq + 1);
                Some(bytes)
            }
            Next::Message => {
                let m = member.queue.pop_front()?;
                member.queued_bytes -= m.size();
                self.queued_bytes -= m.size();
                self.queued_messages -= 1;
                Some(render_message(&m))
            }
        }
    }

    fn wait(
        &mut self,
        conn: ConnId,
        id: PeerId,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Disposition {
        if let Some(bytes) = self.take_next(id) {
            out.push(Action::Send { conn, bytes });
            // Answered at once: no hanging GET, but present now.
            self.seen(id, now);
            return Disposition::Answered;
        }
        let member = self
            .members
            .get_mut(&id)
            .expect("caller checked membership");
        if let Some(old) = member.waiting.replace(conn) {
            log::debug!("member {id}: a second hanging GET replaces connection {old}");
            out.push(Action::Close { conn: old });
        }
        if let Some(since) = member.absent_since.take() {
            self.absent.remove(&(since, id));
        }
        if let Some(view) = self.cluster.as_mut() {
            view.events.push(ClusterEvent::Waiting { id });
        }
        Disposition::Held(id)
    }

    fn message(
        &mut self,
        conn: ConnId,
        from: PeerId,
        to: PeerId,
        req: &Request,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Disposition {
        // Through Redis, which checks that both are members: a join may not have reached
        // this server yet.
        if let Some(view) = self.cluster.as_mut().filter(|v| v.up) {
            if from != to {
                view.events.push(ClusterEvent::Relay {
                    conn,
                    from,
                    to,
                    content_type: req.content_type.clone(),
                    body: req.body.clone(),
                });
                self.seen(from, now);
                return Disposition::Pending;
            }
        }
        if !self.members.contains_key(&from) || !self.members.contains_key(&to) {
            return peer_gone(out, conn);
        }
        self.seen(from, now);
        if from == to {
            respond(
                out,
                conn,
                Response {
                    status: Status::Ok,
                    content_type: &req.content_type,
                    pragma: Some(from),
                    body: &req.body,
                },
            );
            return Disposition::Answered;
        }
        log::trace!("member {from} sends {} bytes to {to}", req.body.len());
        let message = QueuedMessage {
            from,
            after: self.log.end(),
            content_type: req.content_type.clone(),
            body: req.body.clone(),
        };
        self.deliver(to, message, now, out);
        respond(out, conn, Response::text(Status::Ok, b""));
        Disposition::Answered
    }

    /// A member's hanging GET was answered: it is absent until its next request.
    fn answered(&mut self, id: PeerId, now: Instant) {
        if let Some(member) = self.members.get_mut(&id) {
            member.absent_since = Some(now);
            self.absent.insert((now, id));
        }
    }

    /// Answers the member's hanging GET with `message`, or queues it. A member whose queue
    /// overflows has stopped reading and is removed.
    fn deliver(&mut self, to: PeerId, message: QueuedMessage, now: Instant, out: &mut Vec<Action>) {
        let Some(member) = self.members.get_mut(&to) else {
            return;
        };
        if let Some(conn) = member.waiting.take() {
            // A held GET means nothing was pending: the message is next.
            out.push(Action::Send {
                conn,
                bytes: render_message(&message),
            });
            self.answered(to, now);
            return;
        }
        member.queued_bytes += message.size();
        self.queued_bytes += message.size();
        self.queued_messages += 1;
        member.queue.push_back(message);
        if member.pending(&self.log) > self.config.max_queue_items
            || member.queued_bytes > self.config.max_queue_bytes
        {
            self.remove(to, Removal::Evicted(Eviction::QueueOverflow), now, out);
        }
    }

    /// Logs `entry` (a join or a leave) and answers every held GET with it; everyone else
    /// reads it from the log on their next GET. Members whose unread items pass
    /// `--max-queue` have stopped reading and are removed.
    fn notify_all(&mut self, entry: Box<[u8]>, now: Instant, out: &mut Vec<Action>) {
        let seq = self.log.end();
        self.log.push(entry);
        let line = self.log.get(seq).unwrap_or_default();
        let mut told = 0;
        let mut overflowed = Vec::new();
        for member in self.members.values_mut() {
            if let Some(conn) = member.waiting.take() {
                // A held GET means nothing else was pending: this entry is next.
                debug_assert_eq!(member.cursor, seq);
                out.push(Action::Send {
                    conn,
                    bytes: member.render_notice(line),
                });
                member.cursor = seq + 1;
                told += 1;
                // Answered: absent until its next request.
                member.absent_since = Some(now);
                self.absent.insert((now, member.id));
            } else if member.pending(&self.log) > self.config.max_queue_items {
                overflowed.push(member.id);
            }
        }
        // Everyone told moved past the entry together: one update of the cursor counts.
        self.log.move_cursors(seq, seq + 1, told);
        for id in overflowed {
            self.remove(id, Removal::Evicted(Eviction::QueueOverflow), now, out);
        }
    }

    /// Takes a member out of every index, closing its held GET; tells nobody.
    fn detach(&mut self, id: PeerId, out: &mut Vec<Action>) -> Option<ChannelMember> {
        let member = self.members.remove(&id)?;
        if let Some(since) = member.absent_since {
            self.absent.remove(&(since, id));
        }
        if let Some(conn) = member.waiting {
            out.push(Action::Close { conn });
        }
        self.queued_bytes -= member.queued_bytes;
        self.queued_messages -= member.queue.len();
        self.log.remove_cursor(member.cursor);
        Some(member)
    }

    fn remove(&mut self, id: PeerId, why: Removal, now: Instant, out: &mut Vec<Action>) {
        let unread = self
            .members
            .get(&id)
            .map_or(0, |m| (self.log.end() - m.cursor) as usize);
        let Some(member) = self.detach(id, out) else {
            return;
        };
        if let Some(view) = self.cluster.as_mut() {
            if !matches!(why, Removal::Elsewhere) {
                view.events.push(ClusterEvent::Left { id });
            }
        }
        if let Removal::Evicted(why) = why {
            self.evictions[why as usize] += 1;
        }
        log::info!(
            "member {id} {:?} removed: {why:?} ({} members, {} queued messages and {unread} unread entries dropped)",
            String::from_utf8_lossy(&member.name),
            self.members.len(),
            member.queue.len()
        );
        self.notify_all(member.entry(false), now, out);
    }

    /// Over the memory budget: removes the members holding the most undelivered data
    /// (queued messages and unread log entries) until the channel holds at most `target`
    /// bytes. A member that keeps up holds nothing undelivered and is never chosen.
    /// Returns how many were removed.
    pub fn evict_heaviest(&mut self, target: usize, now: Instant, out: &mut Vec<Action>) -> usize {
        if self.memory() <= target {
            return 0;
        }
        let mut heaviest: Vec<(usize, PeerId)> = self
            .members
            .values()
            .map(|m| (m.queued_bytes + self.log.unread_bytes(m.cursor), m.id))
            .filter(|(bytes, _)| *bytes > 0)
            .collect();
        heaviest.sort_unstable_by(|a, b| b.cmp(a));
        let mut evicted = 0;
        for (bytes, id) in heaviest {
            if self.memory() <= target {
                break;
            }
            log::warn!(
                "memory budget: {} bytes undelivered, evicting member {id}, which holds {bytes}",
                self.memory()
            );
            self.remove(id, Removal::Evicted(Eviction::MemoryBudget), now, out);
            evicted += 1;
        }
        evicted
    }

    /// The connection that held `id`'s hanging GET closed.
    pub fn hanging_get_closed(&mut self, conn: ConnId, id: PeerId, now: Instant) {
        if let Some(member) = self.members.get_mut(&id) {
            if member.waiting == Some(conn) {
                member.waiting = None;
                member.absent_since = Some(now);
                self.absent.insert((now, id));
            }
        }
    }

    /// When the next member would time out.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.absent
            .first()
            .map(|(since, _)| *since + self.config.timeout)
    }

    /// Removes every member whose hanging GET has been absent for longer than the timeout.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Action>) {
        while let Some(&(since, id)) = self.absent.first() {
            if since + self.config.timeout > now {
                break;
            }
            self.remove(id, Removal::Evicted(Eviction::TimedOut), now, out);
        }
    }

    /// Server shutdown: answers every hanging GET with the member's own entry marked
    /// disconnected, so clients learn they are signed out, and forgets everyone.
    pub fn shutdown(&mut self, out: &mut Vec<Action>) {
        for member in std::mem::take(&mut self.members).into_values() {
            if let Some(conn) = member.waiting {
                let bytes = member.render_notice(&member.entry(false));
                out.push(Action::Send { conn, bytes });
            }
        }
        self.absent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::DataSocket;
    use crate::server::Limits;
    use crate::signaling::http::{parse_response, ParsedResponse};

    const LIMITS: Limits = Limits {
        max_header_bytes: 8192,
        max_body_bytes: 1 << 20,
    };

    struct Fixture {
        ch: PeerChannel,
        now: Instant,
        out: Vec<Action>,
    }

    impl Fixture {
        fn new(config: ChannelConfig) -> Fixture {
            Fixture {
                ch: PeerChannel::new(config),
                now: Instant::now(),
                out: Vec::new(),
            }
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

        /// The responses sent, by connection, and the closes; clears them.
        fn take(&mut self) -> (Vec<(ConnId, ParsedResponse)>, Vec<ConnId>) {
            let mut sent = Vec::new();
            let mut closed = Vec::new();
            for a in self.out.drain(..) {
                match a {
                    Action::Send { conn, bytes } => {
                        sent.push((conn, parse_response(&bytes).unwrap().unwrap()))
                    }
                    Action::Close { conn } => closed.push(conn),
                }
            }
            (sent, closed)
        }
    }

    fn body(r: &ParsedResponse) -> &str {
        std::str::from_utf8(&r.body).unwrap()
    }

    #[test]
    fn sign_in_lists_self_first_and_notifies_held_gets() {
        let mut f = Fixture::new(ChannelConfig::default());
        f.get(1, "/sign_in?a");
        f.take();
        assert_eq!(f.get(2, "/wait?peer_id=1"), Disposition::Held(1));
        f.get(3, "/sign_in?b");
        let (sent, _) = f.take();
        assert_eq!(sent.len(), 2);
        let (conn, note) = &sent[0];
        assert_eq!((*conn, note.pragma, body(note)), (2, Some(1), "b,2,1\n"));
        let (conn, added) = &sent[1];
        assert_eq!(
            (*conn, added.reason.as_str(), body(added)),
            (3, "Added", "b,2,1\na,1,1\n")
        );
    }

    #[test]
    fn queue_keeps_order_and_echo_answers_on_the_same_socket() {
        let mut f = Fixture::new(ChannelConfig::default());
        f.get(1, "/sign_in?a");
        f.get(2, "/sign_in?b");
        for (conn, text) in [(3, "one"), (4, "two")] {
            f.req(
                conn,
                &format!(
                    "POST /message?peer_id=2&to=1 HTTP/1.0\r\nContent-Length: 3\r\n\r\n{text}"
                ),
            );
        }
        f.take();
        let mut got = Vec::new();
        for conn in 10..13 {
            assert_eq!(f.get(conn, "/wait?peer_id=1"), Disposition::Answered);
            let (sent, _) = f.take();
            got.push(body(&sent[0].1).to_string());
        }
        assert_eq!(got, ["b,2,1\n", "one", "two"]);
        f.req(
            20,
            "POST /message?peer_id=1&to=1 HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
        );
        let (sent, _) = f.take();
        assert_eq!(
            (sent[0].0, sent[0].1.pragma, body(&sent[0].1)),
            (20, Some(1), "hi")
        );
    }

    #[test]
    fn a_second_wait_closes_the_first() {
        let mut f = Fixture::new(ChannelConfig::default());
        f.get(1, "/sign_in?a");
        f.get(2, "/wait?peer_id=1");
        f.take();
        assert_eq!(f.get(3, "/wait?peer_id=1"), Disposition::Held(1));
        assert_eq!(f.take().1, [2]);
    }

    #[test]
    fn absent_members_time_out_on_the_virtual_clock() {
        let mut f = Fixture::new(ChannelConfig {
            timeout: Duration::from_secs(30),
            ..ChannelConfig::default()
        });
        let t0 = f.now;
        f.get(1, "/sign_in?a");
        f.get(2, "/sign_in?b");
        f.take();
        f.get(3, "/wait?peer_id=1"); // a's GET answered at once (b's join)
        f.get(4, "/wait?peer_id=1"); // and held
        f.take();
        assert_eq!(f.ch.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        f.ch.handle_timeout(t0 + Duration::from_secs(29), &mut f.out);
        assert_eq!(f.ch.len(), 2);
        f.ch.handle_timeout(t0 + Duration::from_secs(30), &mut f.out);
        assert_eq!(f.ch.len(), 1, "b timed out; a holds its GET and stays");
        let (sent, _) = f.take();
        assert_eq!((sent[0].0, body(&sent[0].1)), (4, "b,2,0\n"));
        // a's GET was answered: a is absent from now on.
        assert!(f.ch.poll_timeout().is_some());
    }

    #[test]
    fn a_member_polling_a_full_queue_is_present_and_never_times_out() {
        let timeout = Duration::from_secs(30);
        let mut f = Fixture::new(ChannelConfig {
            timeout,
            ..ChannelConfig::default()
        });
        let t0 = f.now;
        f.get(1, "/sign_in?a");
        f.get(2, "/sign_in?b");
        f.get(3, "/sign_in?watcher");
        f.take();
        // The watcher holds its GET through the run (after taking nothing: it joined last).
        assert_eq!(f.get(4, "/wait?peer_id=3"), Disposition::Held(3));
        // For three timeouts, b floods a (b only posts) and a polls once a second: every
        // GET of a's is answered from its queue, none is ever held.
        let mut conn = 100;
        for second in 0..90u64 {
            f.now = t0 + Duration::from_secs(second);
            f.req(
                conn,
                "POST /message?peer_id=2&to=1 HTTP/1.0\r\nContent-Length: 1\r\n\r\nx",
            );
            assert_eq!(f.get(conn + 1, "/wait?peer_id=1"), Disposition::Answered);
            conn += 2;
            f.ch.handle_timeout(f.now, &mut f.out);
            let (sent, _) = f.take();
            assert!(
                sent.iter().all(|(c, _)| *c != 4),
                "second {second}: the watcher heard {:?}",
                body(&sent.iter().find(|(c, _)| *c == 4).unwrap().1)
            );
            assert_eq!(f.ch.len(), 3, "second {second}");
            // Neither a nor b is due before a full timeout from now.
            assert_eq!(f.ch.poll_timeout(), Some(f.now + timeout));
        }
        // Once they stop, they time out a timeout after their last request.
        let last = f.now;
        f.ch.handle_timeout(last + timeout - Duration::from_millis(1), &mut f.out);
        assert_eq!(f.ch.len(), 3);
        f.ch.handle_timeout(last + timeout, &mut f.out);
        assert_eq!(f.ch.len(), 1, "a and b gone, the watcher stays");
    }

    #[test]
    fn notices_and_messages_arrive_in_the_order_they_happened() {
        let mut f = Fixture::new(ChannelConfig::default());
        f.get(1, "/sign_in?a");
        f.get(2, "/sign_in?b");
        f.req(
            3,
            "POST /message?peer_id=2&to=1 HTTP/1.0\r\nContent-Length: 3\r\n\r\none",
        );
        f.get(4, "/sign_in?c");
        f.req(
            5,
            "POST /message?peer_id=3&to=1 HTTP/1.0\r\nContent-Length: 3\r\n\r\ntwo",
        );
        f.get(6, "/sign_out?peer_id=2");
        f.take();
        let mut got = Vec::new();
        for conn in 10..15 {
            assert_eq!(f.get(conn, "/wait?peer_id=1"), Disposition::Answered);
            let (sent, _) = f.take();
            let r = &sent[0].1;
            got.push(format!("{:?} {}", r.pragma, body(r)));
        }
        assert_eq!(
            got,
            [
                "Some(1) b,2,1\n",
                "Some(2) one",
                "Some(1) c,3,1\n",
                "Some(3) two",
                "Some(1) b,2,0\n"
            ]
        );
        assert_eq!(f.get(20, "/wait?peer_id=1"), Disposition::Held(1));
        // Only b's leave is left in the log, for c, which never waited.
        assert_eq!(f.ch.stats().presence_log_bytes, 6 + NOTICE_OVERHEAD);
        assert_eq!(f.get(21, "/wait?peer_id=3"), Disposition::Answered);
        assert_eq!(f.ch.stats().presence_log_bytes, 0);
    }

    #[test]
    fn members_that_never_wait_hold_a_cursor_not_copies() {
        let mut f = Fixture::new(ChannelConfig::default());
        f.get(1, "/sign_in?first");
        for i in 0..1000 {
            f.get(2 + i, &format!("/sign_in?m{i}"));
        }
        f.take();
        // One line per join, whoever has yet to read it: linear, not quadratic.
        let log = f.ch.stats().presence_log_bytes;
        assert!(log < 1000 * (12 + NOTICE_OVERHEAD), "{log}");
        assert!(log > 1000 * 6);
        // The first member, the furthest behind, leaves: m0's join, which only it had
        // yet to read, is dropped, and its leave (for all 1000) costs one line.
        f.get(5000, "/sign_out?peer_id=1");
        let after = f.ch.stats().presence_log_bytes;
        assert_eq!(after, log - (7 + NOTICE_OVERHEAD) + (10 + NOTICE_OVERHEAD));
    }

    #[test]
    fn eviction_takes_the_heaviest_and_never_a_member_that_keeps_up() {
        let mut f = Fixture::new(ChannelConfig::default());
        f.get(1, "/sign_in?keeps_up");
        f.get(2, "/sign_in?sender");
        f.get(3, "/sign_in?laggard");
        f.get(4, "/sign_in?light");
        // keeps_up reads what it has, then holds its GET.
        for conn in 10.. {
            if f.get(conn, "/wait?peer_id=1") == Disposition::Held(1) {
                break;
            }
        }
        let big = "x".repeat(10_000);
        f.req(
            20,
            &format!(
                "POST /message?peer_id=2&to=3 HTTP/1.0\r\nContent-Length: {}\r\n\r\n{big}",
                big.len()
            ),
        );
        f.req(
            21,
            "POST /message?peer_id=2&to=4 HTTP/1.0\r\nContent-Length: 1\r\n\r\nx",
        );
        f.take();
        let evicted = f.ch.evict_heaviest(5_000, f.now, &mut f.out);
        assert_eq!(evicted, 1);
        assert!(f.ch.member(3).is_none(), "the laggard went");
        assert!(f.ch.member(1).is_some() && f.ch.member(4).is_some());
        assert_eq!(f.ch.stats().memory_evictions, 1);
        // keeps_up's held GET is told of the eviction like any leave.
        let (sent, _) = f.take();
        assert!(sent
            .iter()
            .any(|(_, r)| r.pragma == Some(1) && body(r) == "laggard,3,0\n"));
    }

    #[test]
    fn a_queue_overflow_removes_the_member() {
        let mut f = Fixture::new(ChannelConfig {
            max_queue_items: 3,
            ..ChannelConfig::default()
        });
        f.get(1, "/sign_in?a");
        f.get(2, "/sign_in?b");
        // b takes one item on a held GET, so it ends with exactly 3 queued: not too many.
        f.get(5, "/wait?peer_id=2");
        for i in 0..3 {
            f.get(10 + i, &format!("/sign_in?c{i}"));
        }
        assert!(
            f.ch.member(1).is_none(),
            "a queued 4 items past the limit of 3"
        );
        assert!(f.ch.member(2).is_some());
    }

    #[test]
    fn shutdown_answers_held_gets_with_the_members_own_entry() {
        let mut f = Fixture::new(ChannelConfig::default());
        f.get(1, "/sign_in?a");
        f.get(2, "/wait?peer_id=1");
        f.take();
        f.ch.shutdown(&mut f.out);
        let (sent, _) = f.take();
        assert_eq!(
            (sent[0].0, sent[0].1.pragma, body(&sent[0].1)),
            (2, Some(1), "a,1,0\n")
        );
        assert!(f.ch.is_empty());
    }

    #[test]
    fn hanging_get_closed_makes_the_member_absent() {
        let mut f = Fixture::new(ChannelConfig::default());
        f.get(1, "/sign_in?a");
        f.get(2, "/wait?peer_id=1");
        assert_eq!(f.ch.poll_timeout(), None);
        f.ch.hanging_get_closed(2, 1, f.now);
        assert!(f.ch.poll_timeout().is_some());
        // A stale close for another connection changes nothing.
        f.get(3, "/wait?peer_id=1");
        f.ch.hanging_get_closed(2, 1, f.now);
        assert_eq!(f.ch.poll_timeout(), None);
    }
}
