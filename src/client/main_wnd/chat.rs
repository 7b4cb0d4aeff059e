//! The window's chat, without SDL: on the streaming screen `Enter` opens a one-line text
//! field (`Enter` sends, `Esc` cancels), sent and received lines show in the overlay for
//! [`SHOWN_FOR`], and all of them stay in a scroll-back that `Tab` shows and hides.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a chat line stays in the overlay.
pub const SHOWN_FOR: Duration = Duration::from_secs(6);
/// Lines the scroll-back keeps (the oldest go first).
pub const SCROLLBACK: usize = 200;
/// Lines the overlay shows at once (the newest).
pub const RECENT: usize = 4;
/// The longest line typed, in bytes (the stdin limit).
pub const MAX_TYPED: usize = 4096;

/// One chat line as shown: who said it and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    pub at: Instant,
    pub text: String,
}

/// The field being typed, the recent lines and the scroll-back.
#[derive(Debug, Clone, Default)]
pub struct ChatBox {
    /// The text field while it is open.
    editing: Option<String>,
    lines: VecDeque<ChatLine>,
    /// The scroll-back is shown (Tab).
    pub(super) show_log: bool,
}

impl ChatBox {
    /// Forgets the call's chat (a new call starts with none).
    pub fn clear(&mut self) {
        *self = ChatBox::default();
    }

    pub fn editing(&self) -> Option<&str> {
        self.editing.as_deref()
    }

    pub fn open(&mut self) {
        self.editing.get_or_insert_with(String::new);
    }

    /// Closes the field; its text, if any, is the line to send.
    pub fn take(&mut self) -> Option<String> {
        self.editing.take().filter(|t| !t.trim().is_empty())
    }

    pub fn cancel(&mut self) {
        self.editing = None;
    }

    pub fn backspace(&mut self) {
        if let Some(t) = self.editing.as_mut() {
            t.pop();
        }
    }

    /// Text typed into the open field (control characters dropped).
    pub fn type_text(&mut self, typed: &str) {
        let Some(t) = self.editing.as_mut() else {
            return;
        };
        for c in typed.chars().filter(|c| !c.is_control()) {
            if t.len() + c.len_utf8() > MAX_TYPED {
                break;
            }
            t.push(c);
        }
    }

    pub fn toggle_log(&mut self) {
        self.show_log = !self.show_log;
    }

    /// A line sent or received, shown from `now`.
    pub fn push(&mut self, text: String, now: Instant) {
        if self.lines.len() == SCROLLBACK {
            self.lines.pop_front();
        }
        self.lines.push_back(ChatLine { at: now, text });
    }

    /// The lines the overlay shows at `now`: the scroll-back's last lines while it is
    /// shown, else the newest lines younger than [`SHOWN_FOR`].
    pub fn visible(&self, now: Instant, max: usize) -> Vec<&str> {
        let fresh =
            |l: &&ChatLine| self.show_log || now.saturating_duration_since(l.at) < SHOWN_FOR;
        let limit = if self.show_log { max } else { max.min(RECENT) };
        let mut v: Vec<&str> = self
            .lines
            .iter()
            .rev()
            .filter(fresh)
            .take(limit)
            .map(|l| l.text.as_str())
            .collect();
        v.reverse();
        v
    }

    /// When the overlay next changes by itself (a line fading out).
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        if self.show_log {
            return None;
        }
        self.lines
            .iter()
            .map(|l| l.at + SHOWN_FOR)
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_lines_are_taken_once_and_control_characters_dropped() {
        let mut c = ChatBox::default();
        c.type_text("ignored: not open");
        assert_eq!(c.editing(), None);
        c.open();
        c.type_text("hi\u{7}\tbob!");
        c.backspace();
        assert_eq!(c.editing(), Some("hibob"));
        assert_eq!(c.take(), Some("hibob".to_string()));
        assert_eq!(c.take(), None);
        c.open();
        c.type_text("   ");
        assert_eq!(c.take(), None, "blank lines are not sent");
        c.open();
        c.type_text(&"x".repeat(MAX_TYPED + 10));
        assert_eq!(c.editing().map(str::len), Some(MAX_TYPED));
        c.cancel();
        assert_eq!(c.editing(), None);
    }

    #[test]
    fn lines_fade_from_the_overlay_but_stay_in_the_scroll_back() {
        let t0 = Instant::now();
        let mut c = ChatBox::default();
        for i in 0..6 {
            c.push(format!("line {i}"), t0 + Duration::from_secs(i));
        }
        let now = t0 + Duration::from_secs(6);
        // Line 0 is 6 s old (gone); the newest four show.
        assert_eq!(c.visible(now, 10), ["line 2", "line 3", "line 4", "line 5"]);
        assert_eq!(c.next_change(now), Some(t0 + Duration::from_secs(7)));
        let later = t0 + Duration::from_secs(60);
        assert!(c.visible(later, 10).is_empty());
        c.toggle_log();
        assert_eq!(c.visible(later, 3), ["line 3", "line 4", "line 5"]);
        assert_eq!(c.next_change(later), None);
        for i in 0..SCROLLBACK {
            c.push(format!("more {i}"), later);
        }
        assert_eq!(c.lines.len(), SCROLLBACK);
    }
}
