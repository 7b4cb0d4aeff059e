//! The member registry (after the original's `PeerChannel` and `ChannelMember`): sign in,
//! hanging GETs, message routing, queues, notifications, time-outs. No IO: requests come in
//! with the connection they arrived on, [`Action`]s go out for the loop to carry out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

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

/// Something waiting for a member's next hanging GET.
#[derive(Debug)]
enum QueuedItem {
    /// Another member's entry line; shared by everyone told of the same join or leave.
    Notification(Rc<[u8]>),
    /// Boxed so a queue slot stays two words: join storms queue millions of items.
    Message(Box<QueuedMessage>),
}

#[derive(Debug)]
struct QueuedMessage {
    from: PeerId,
    content_type: Vec<u8>,
    body: Vec<u8>,
}

impl QueuedItem {
    fn size(&self) -> usize {
        match self {
            QueuedItem::Notification(entry) => entry.len(),
            QueuedItem::Message(m) => m.content_type.len() + m.body.len(),
        }
    }
}

/// One signed-in member.
#[derive(Debug)]
pub struct ChannelMember {
    pub id: PeerId,
    name: Box<[u8]>,
    waiting: Option<ConnId>,
    /// When the hanging GET went away (or the member signed in without one).
    absent_since: Option<Instant>,
    queue: VecDeque<QueuedItem>,
    queued_bytes: usize,
}

impl ChannelMember {
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    fn entry(&self, connected: bool) -> Rc<[u8]> {
        let mut line = Vec::with_capacity(self.name.len() + 14);
        write_entry(&mut line, &self.name, self.id, connected);
        line.into()
    }

    /// Renders a queued item as the response to this member's hanging GET.
    fn render(&self, item: &QueuedItem) -> Vec<u8> {
        match item {
            QueuedItem::Notification(entry) => Response {
                status: Status::Ok,
                content_type: b"text/plain",
                pragma: Some(self.id),
                body: entry,
            }
            .to_bytes(),
            QueuedItem::Message(m) => Response {
                status: Status::Ok,
                content_type: &m.content_type,
                pragma: Some(m.from),
                body: &m.body,
            }
            .to_bytes(),
        }
    }
}

/// Why a member is being removed: for the log, and the server's own removals for metrics.
#[derive(Debug, Clone, Copy)]
enum Removal {
    SignedOut,
    Evicted(Eviction),
}

/// The registry of members.
#[derive(Debug)]
pub struct PeerChannel {
    config: ChannelConfig,
    members: BTreeMap<PeerId, ChannelMember>,
    /// Members without a hanging GET, by the time it went away: the time-out order.
    absent: BTreeSet<(Instant, PeerId)>,
    next_id: PeerId,
    /// Sum of every member's `queued_bytes`, and the number of queued messages.
    queued_bytes: usize,
    queued_messages: usize,
    /// Members removed by the server, by cause (in [`Eviction`] order).
    evictions: [u64; 3],
}

/// What the channel holds, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    pub members: usize,
    pub queued_bytes: usize,
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
            queued_bytes: 0,
            queued_messages: 0,
            evictions: [0; 3],
        }
    }

    pub fn stats(&self) -> ChannelStats {
        ChannelStats {
            members: self.members.len(),
            queued_bytes: self.queued_bytes,
            queued_messages: self.queued_messages,
            timed_out: self.evictions[Eviction::TimedOut as usize],
            queue_overflows: self.evictions[Eviction::QueueOverflow as usize],
            memory_evictions: self.evictions[Eviction::MemoryBudget as usize],
        }
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
                Ok(id) if !self.members.contains_key(&id) => peer_gone(out, conn),
                Ok(id) => self.wait(conn, id, now, out),
            },
            (Method::Get, "/sign_out") => match self.peer_arg(args, "peer_id") {
                Err(why) => error(out, conn, Status::BadRequest, why),
                Ok(id) if !self.members.contains_key(&id) => peer_gone(out, conn),
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
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let mut name: Vec<u8> = args.as_bytes().to_vec();
        if name.is_empty() {
            name = format!("peer_{id}").into_bytes();
        } else {
            name.truncate(MAX_NAME_LEN);
            for b in name.iter_mut().filter(|b| **b == b',') {
                *b = b'_';
            }
        }
        let member = ChannelMember {
            id,
            name: name.into_boxed_slice(),
            waiting: None,
            absent_since: Some(now),
            queue: VecDeque::new(),
            queued_bytes: 0,
        };
        let entry = member.entry(true);
        let mut body = Vec::with_capacity(entry.len() * (self.members.len() + 1));
        body.extend_from_slice(&entry);
        for other in self.members.values() {
            write_entry(&mut body, &other.name, other.id, true);
        }
        log::info!(
            "member {id} {:?} signed in ({} members)",
            String::from_utf8_lossy(&member.name),
            self.members.len() + 1
        );
        self.notify_all(id, &entry, now, out);
        self.absent.insert((now, id));
        self.members.insert(id, member);
        respond(
            out,
            conn,
            Response {
                status: Status::Added,
                content_type: b"text/plain",
                pragma: Some(id),
                body: &body,
            },
        );
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

    fn wait(
        &mut self,
        conn: ConnId,
        id: PeerId,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Disposition {
        let member = self
            .members
            .get_mut(&id)
            .expect("caller checked membership");
        if let Some(item) = member.queue.pop_front() {
            member.queued_bytes -= item.size();
            self.queued_bytes -= item.size();
            self.queued_messages -= usize::from(matches!(item, QueuedItem::Message(_)));
            let bytes = member.render(&item);
            out.push(Action::Send { conn, bytes });
            // Answered at once: no hanging GET, but present now.
            self.seen(id, now);
            return Disposition::Answered;
        }
        if let Some(old) = member.waiting.replace(conn) {
            log::debug!("member {id}: a second hanging GET replaces connection {old}");
            out.push(Action::Close { conn: old });
        }
        if let Some(since) = member.absent_since.take() {
            self.absent.remove(&(since, id));
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
        let item = QueuedItem::Message(Box::new(QueuedMessage {
            from,
            content_type: req.content_type.clone(),
            body: req.body.clone(),
        }));
        self.deliver(to, item, now, out);
        respond(out, conn, Response::text(Status::Ok, b""));
        Disposition::Answered
    }

    /// Answers the member's hanging GET with `item`, or queues it. A member whose queue
    /// overflows has stopped reading and is removed.
    fn deliver(&mut self, to: PeerId, item: QueuedItem, now: Instant, out: &mut Vec<Action>) {
        let Some(member) = self.members.get_mut(&to) else {
            return;
        };
        if let Some(conn) = member.waiting.take() {
            let bytes = member.render(&item);
            out.push(Action::Send { conn, bytes });
            member.absent_since = Some(now);
            self.absent.insert((now, to));
            return;
        }
        member.queued_bytes += item.size();
        self.queued_bytes += item.size();
        self.queued_messages += usize::from(matches!(item, QueuedItem::Message(_)));
        member.queue.push_back(item);
        if member.queue.len() > self.config.max_queue_items
            || member.queued_bytes > self.config.max_queue_bytes
        {
            self.remove(to, Removal::Evicted(Eviction::QueueOverflow), now, out);
        }
    }

    /// Tells every member but `except` about `entry`.
    fn notify_all(
        &mut self,
        except: PeerId,
        entry: &Rc<[u8]>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let ids: Vec<PeerId> = self
            .members
            .keys()
            .copied()
            .filter(|&id| id != except)
            .collect();
        for id in ids {
            self.deliver(id, QueuedItem::Notification(entry.clone()), now, out);
        }
    }

    fn remove(&mut self, id: PeerId, why: Removal, now: Instant, out: &mut Vec<Action>) {
        let Some(member) = self.members.remove(&id) else {
            return;
        };
        if let Some(since) = member.absent_since {
            self.absent.remove(&(since, id));
        }
        if let Some(conn) = member.waiting {
            out.push(Action::Close { conn });
        }
        self.queued_bytes -= member.queued_bytes;
        self.queued_messages -= member
            .queue
            .iter()
            .filter(|i| matches!(i, QueuedItem::Message(_)))
            .count();
        if let Removal::Evicted(why) = why {
            self.evictions[why as usize] += 1;
        }
        log::info!(
            "member {id} {:?} removed: {why:?} ({} members, {} queued items dropped)",
            String::from_utf8_lossy(&member.name),
            self.members.len(),
            member.queue.len()
        );
        self.notify_all(id, &member.entry(false), now, out);
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
                let bytes = member.render(&QueuedItem::Notification(member.entry(false)));
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
