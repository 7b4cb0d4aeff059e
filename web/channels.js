// The call's data channels, as the native client has them (src/client/conductor.rs and
// src/client/file_transfer.rs): a reliable, ordered `chat` channel in the first offer
// (text messages are chat; binary ones are JSON control messages, `{"type":"bye"}` being a
// hang-up), and one `file` channel per file, opened in-band, carrying
// file -> accept|reject -> binary chunks -> end(sha256) -> received|error.
// State is mirrored in window.pcChannels for tests.
'use strict';
(() => {
  const CHUNK = 32 * 1024; // bytes per binary message
  const WINDOW = 256 * 1024; // most bytes queued on a file channel before waiting
  const MAX_RECEIVE = 256 * 1024 * 1024; // a received file is held in memory until saved
  const $ = (id) => document.getElementById(id);
  const st = (window.pcChannels = { chatOpen: false, log: [], sent: [], received: [], failed: [] });
  let pc = null;
  let chat = null;
  let onBye = () => {};

  const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');
  const sha256 = async (data) => hex(await crypto.subtle.digest('SHA-256', data));

  function logLine(who, text) {
    st.log.push(`${who}: ${text}`);
    const div = document.createElement('div');
    div.textContent = `${who}: ${text}`;
    $('chatlog').appendChild(div);
  }

  function failed(dir, name, reason) {
    st.failed.push({ dir, name, reason });
    logLine('file', `${dir} ${name} failed: ${reason}`);
  }

  // Same rules as the native receiver's check_name.
  function badName(name) {
    if (!name) return 'empty';
    if (new TextEncoder().encode(name).length > 255) return 'longer than 255 bytes';
    if (/[/\\]/.test(name)) return 'contains a path separator';
    if (name.startsWith('.')) return 'starts with a dot';
    if (/[\u0000-\u001f\u007f]/.test(name)) return 'contains a control character';
    return null;
  }

  function setupChat(ch) {
    chat = ch;
    ch.binaryType = 'arraybuffer';
    const opened = () => { st.chatOpen = true; $('chatbox').classList.remove('hidden'); };
    // A channel the peer opened may be open already when it is handed over.
    if (ch.readyState === 'open') opened();
    ch.onopen = opened;
    ch.onclose = () => { st.chatOpen = false; };
    ch.onmessage = (e) => {
      if (typeof e.data === 'string') return logLine('peer', e.data);
      let msg = null;
      try { msg = JSON.parse(new TextDecoder().decode(e.data)); } catch (_) { return; }
      if (msg && msg.type === 'bye') onBye();
    };
  }

  // A file coming in on a channel the peer opened.
  function receiveFile(ch) {
    ch.binaryType = 'arraybuffer';
    let offer = null;
    let parts = [];
    let got = 0;
    let done = false;
    const start = performance.now();
    const refuse = (type, reason) => {
      done = true;
      parts = [];
      ch.send(JSON.stringify({ type, reason }));
      failed('recv', offer ? offer.name : '?', reason);
    };
    ch.onmessage = async (e) => {
      if (done) return;
      if (typeof e.data !== 'string') {
        if (!offer) return refuse('error', 'protocol error: data before the file\'s offer');
        got += e.data.byteLength;
        if (got > offer.size) return refuse('error', `protocol error: more bytes than the ${offer.size} announced`);
        parts.push(e.data);
        return;
      }
      let msg;
      try { msg = JSON.parse(e.data); } catch (_) { return refuse('error', 'protocol error: not a control message'); }
      if (!offer && msg.type === 'file') {
        offer = { name: String(msg.name), size: Number(msg.size) };
        const bad = badName(offer.name);
        if (bad) return refuse('reject', `bad file name ${JSON.stringify(offer.name)}: ${bad}`);
        if (!(offer.size >= 0 && offer.size <= MAX_RECEIVE)) {
          return refuse('reject', `${JSON.stringify(offer.name)} is ${offer.size} bytes, more than the ${MAX_RECEIVE} bytes this receiver allows`);
        }
        ch.send(JSON.stringify({ type: 'accept' }));
      } else if (offer && msg.type === 'end') {
        if (got < offer.size) return refuse('error', `the transfer stopped after ${got} of ${offer.size} bytes`);
        const blob = new Blob(parts);
        const ours = await sha256(await blob.arrayBuffer());
        if (ours !== msg.sha256) return refuse('error', `SHA-256 mismatch: sent ${msg.sha256}, received ${ours}`);
        done = true;
        ch.send(JSON.stringify({ type: 'received', sha256: ours }));
        const a = document.createElement('a');
        a.href = URL.createObjectURL(blob);
        a.download = offer.name;
        a.textContent = `${offer.name} (${got} bytes)`;
        $('downloads').appendChild(a);
        const secs = (performance.now() - start) / 1000;
        st.received.push({ name: offer.name, bytes: got, sha256: ours, mbPerS: got / 1e6 / secs });
        logLine('file', `received ${offer.name}`);
      } else {
        refuse('error', `protocol error: ${msg.type} out of order`);
      }
    };
    ch.onclose = () => { if (!done && offer) failed('recv', offer.name, `the transfer stopped after ${got} of ${offer.size} bytes`); };
  }

  // One file out on its own channel, CHUNK bytes at a time while less than WINDOW waits.
  // WebCrypto hashes whole buffers only, so the page reads the file into memory.
  async function sendFile(file) {
    if (!pc || !st.chatOpen) return failed('send', file.name, 'no open data channel');
    const ch = pc.createDataChannel('file');
    ch.binaryType = 'arraybuffer';
    ch.bufferedAmountLowThreshold = WINDOW / 2;
    const replies = [];
    let wake = null;
    ch.onmessage = (e) => { replies.push(e.data); if (wake) wake(); };
    ch.onbufferedamountlow = () => { if (wake) wake(); };
    ch.onclose = () => { if (wake) wake(); };
    const next = () => new Promise((ok) => { wake = ok; });
    const reply = async () => {
      while (!replies.length && ch.readyState === 'open') await next();
      return replies.length ? JSON.parse(replies.shift()) : { type: 'error', reason: 'the channel closed' };
    };
    const start = performance.now();
    if (ch.readyState === 'connecting') {
      await new Promise((ok) => { ch.addEventListener('open', ok); ch.addEventListener('close', ok); });
    }
    if (ch.readyState !== 'open') return failed('send', file.name, 'the channel did not open');
    const data = await file.arrayBuffer();
    const sum = await sha256(data);
    ch.send(JSON.stringify({ type: 'file', name: file.name, size: data.byteLength }));
    let r = await reply();
    if (r.type !== 'accept') { ch.close(); return failed('send', file.name, `the peer says: ${r.reason}`); }
    for (let off = 0; off < data.byteLength; off += CHUNK) {
      while (ch.bufferedAmount + CHUNK > WINDOW && ch.readyState === 'open') await next();
      if (ch.readyState !== 'open') return failed('send', file.name, `the transfer stopped after ${off} of ${data.byteLength} bytes`);
      ch.send(data.slice(off, off + CHUNK));
    }
    ch.send(JSON.stringify({ type: 'end', sha256: sum }));
    r = await reply();
    ch.close();
    if (r.type !== 'received' || r.sha256 !== sum) return failed('send', file.name, `the peer says: ${r.reason || r.sha256}`);
    const secs = (performance.now() - start) / 1000;
    st.sent.push({ name: file.name, bytes: data.byteLength, sha256: sum, mbPerS: data.byteLength / 1e6 / secs });
    logLine('file', `sent ${file.name}`);
  }

  // Called by app.js with each new peer connection: the offerer makes the chat channel.
  function attach(newPc, offerer, bye) {
    pc = newPc;
    onBye = bye;
    st.chatOpen = false;
    if (offerer) setupChat(pc.createDataChannel('chat'));
    pc.ondatachannel = (e) => {
      if (e.channel.label === 'chat') setupChat(e.channel);
      else if (e.channel.label === 'file') receiveFile(e.channel);
    };
  }

  // Before the connection closes: tell the peer over the channel too.
  function bye() {
    if (chat && chat.readyState === 'open') chat.send(new TextEncoder().encode('{"type":"bye"}'));
  }

  function detach() {
    pc = null;
    chat = null;
    st.chatOpen = false;
    $('chatbox').classList.add('hidden');
  }

  function sendChat(text) {
    if (!chat || chat.readyState !== 'open' || !text) return false;
    chat.send(text);
    logLine('me', text);
    return true;
  }

  $('chatform').onsubmit = (e) => {
    e.preventDefault();
    if (sendChat($('chattext').value)) $('chattext').value = '';
  };
  $('file').onchange = () => { for (const f of $('file').files) sendFile(f); };
  window.pcData = { attach, detach, bye, sendChat, sendFile };
})();
