//! A NATS wire for the native engine (prototype): a group's pulls read and its deliveries
//! answered on a connection of its own, parsed off the JS thread (async-nats on a tokio worker).
//! The TS driver keeps every decision (which pull, when, what an answer is); this only carries
//! bytes. Deliveries reach JS in batches, one buffer per batch:
//!
//! - a delivery: `0u8`, handle u32, delivery count u32, stream seq f64, time ns f64, headers
//!   length u32 and the raw header block, payload length u32 and the payload;
//! - a status of the pull: `1u8`, code u16, description length u16 and the description;
//! - the pull's subscription ended: `2u8`.
//!
//! Numbers are little-endian. A delivery's ack subject stays here, under its handle: JS answers
//! by handle (`answer`), so subjects never cross.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use napi::bindgen_prelude::{Buffer, Function, Uint32Array};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Error, Result, Status};
use napi_derive::napi;

/// Called on the JS thread with a batch of a pull's records (weak: it never keeps Node running).
type Deliver = ThreadsafeFunction<Buffer, (), Buffer, Status, false, true, 0>;
/// Called on the JS thread with the connection's events: `connected`, `disconnected`, `closed`,
/// or an error's text.
type Events = ThreadsafeFunction<String, (), String, Status, false, true, 0>;
/// Called on the JS thread once answers were read by the server (true), or could not be (false).
type Done = ThreadsafeFunction<bool, (), bool, Status, false, true, 0>;

/// The most records handed to JS in one call.
const BATCH_RECORDS: usize = 512;

/// How the wire connects: the driver's own options (a TLS connection never takes the wire).
#[napi(object)]
pub struct WireOptions {
    /// `nats://host:port` addresses, without credentials.
    pub servers: Vec<String>,
    /// How long one attempt to connect may take.
    pub connect_timeout_ms: u32,
    /// A token to authenticate with.
    pub token: Option<String>,
    /// A user to authenticate as, with `pass`.
    pub user: Option<String>,
    /// `user`'s password.
    pub pass: Option<String>,
    /// An nkey seed that signs the server's challenge.
    pub nkey_seed: Option<String>,
    /// A credentials file's text (a user JWT and its seed).
    pub creds: Option<String>,
}

/// A connection carrying groups' pulls and their answers.
#[napi]
pub struct NatsWire {
    runtime: Option<tokio::runtime::Runtime>,
    client: async_nats::Client,
    shared: Arc<Shared>,
    /// Each open pull's end, by id.
    pulls: Mutex<HashMap<u32, tokio::sync::oneshot::Sender<()>>>,
}

/// What the wire's tasks share.
#[derive(Default)]
struct Shared {
    /// Ack subjects of deliveries not answered yet, by handle.
    replies: Mutex<HashMap<u32, async_nats::Subject>>,
    next: AtomicU32,
    /// Whether the connection is up.
    up: AtomicBool,
    /// Counts the connection's drops: answers sent across one are not known to be read.
    drops: tokio::sync::watch::Sender<u64>,
}

fn failed(what: &str, err: impl std::fmt::Display) -> Error {
    Error::new(Status::GenericFailure, format!("{what}: {err}"))
}

#[napi]
impl NatsWire {
    /// Opens the wire: it connects in the background, and again after each drop, for ever
    /// (events say when); what is sent meanwhile waits for the connection.
    #[allow(clippy::needless_pass_by_value, reason = "napi passes owned values")]
    #[napi(factory)]
    pub fn open(options: WireOptions, events: Function<String, ()>) -> Result<NatsWire> {
        let events: Arc<Events> = Arc::new(
            events.build_threadsafe_function().weak::<true>().build().map_err(|e| failed("the wire's events", e))?,
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| failed("the wire's runtime", e))?;
        let shared = Arc::new(Shared::default());
        let said = Arc::clone(&shared);
        let mut connect = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(std::time::Duration::from_millis(u64::from(options.connect_timeout_ms)))
            .reconnect_delay_callback(|_| std::time::Duration::from_millis(250))
            .event_callback(move |event| {
                let events = Arc::clone(&events);
                let shared = Arc::clone(&said);
                async move {
                    let said = match event {
                        async_nats::Event::Connected => {
                            shared.up.store(true, Ordering::SeqCst);
                            "connected".to_owned()
                        }
                        async_nats::Event::Disconnected => {
                            shared.up.store(false, Ordering::SeqCst);
                            shared.drops.send_modify(|n| *n += 1);
                            "disconnected".to_owned()
                        }
                        async_nats::Event::Closed => {
                            shared.up.store(false, Ordering::SeqCst);
                            shared.drops.send_modify(|n| *n += 1);
                            "closed".to_owned()
                        }
                        other => other.to_string(),
                    };
                    events.call(said, ThreadsafeFunctionCallMode::NonBlocking);
                }
            });
        if let Some(token) = options.token {
            connect = connect.token(token);
        }
        if let (Some(user), Some(pass)) = (options.user, options.pass) {
            connect = connect.user_and_password(user, pass);
        }
        if let Some(seed) = options.nkey_seed {
            connect = connect.nkey(seed);
        }
        if let Some(creds) = options.creds {
            connect = connect.credentials(&creds).map_err(|e| failed("the wire's credentials", e))?;
        }
        let servers: Vec<async_nats::ServerAddr> = options
            .servers
            .iter()
            .map(|s| s.parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| failed("the wire's servers", e))?;
        // Returns at once: the connection is made in the background.
        let client = runtime.block_on(connect.connect(servers)).map_err(|e| failed("the wire's connection", e))?;
        Ok(NatsWire { runtime: Some(runtime), client, shared, pulls: Mutex::default() })
    }

    fn runtime(&self) -> Result<&tokio::runtime::Runtime> {
        self.runtime.as_ref().ok_or_else(|| Error::new(Status::GenericFailure, "the wire is closed"))
    }

    /// Sends a pull (`request`, JSON) to `subject` with its own inbox; its records go to `deliver`.
    #[allow(clippy::needless_pass_by_value, reason = "napi passes owned values")]
    #[napi]
    pub fn pull(&self, id: u32, subject: String, request: String, deliver: Function<Buffer, ()>) -> Result<()> {
        let deliver: Deliver =
            deliver.build_threadsafe_function().weak::<true>().build().map_err(|e| failed("the pull's callback", e))?;
        let runtime = self.runtime()?;
        let client = self.client.clone();
        let shared = Arc::clone(&self.shared);
        let (end, mut ended) = tokio::sync::oneshot::channel::<()>();
        self.pulls.lock().map_err(|e| failed("pulls", e))?.insert(id, end);
        runtime.spawn(async move {
            let inbox = client.new_inbox();
            let subscribed = client.subscribe(inbox.clone()).await;
            let sent = match &subscribed {
                Ok(_) => client.publish_with_reply(subject, inbox, request.into()).await.is_ok(),
                Err(_) => false,
            };
            let (Ok(mut sub), true) = (subscribed, sent) else {
                deliver.call(Buffer::from(vec![2u8]), ThreadsafeFunctionCallMode::NonBlocking);
                return;
            };
            let mut out = Vec::with_capacity(64 * 1024);
            loop {
                let first = tokio::select! {
                    biased;
                    m = sub.next() => m,
                    _ = &mut ended => None,
                };
                let Some(first) = first else { break };
                let mut count = 0;
                let mut message = Some(first);
                while let Some(m) = message.take() {
                    write_record(&mut out, m, &shared);
                    count += 1;
                    if count == BATCH_RECORDS {
                        break;
                    }
                    // More already read: into this batch.
                    if let Some(Some(m)) = futures_util::FutureExt::now_or_never(sub.next()) {
                        message = Some(m);
                    }
                }
                let batch = std::mem::replace(&mut out, Vec::with_capacity(64 * 1024));
                deliver.call(Buffer::from(batch), ThreadsafeFunctionCallMode::NonBlocking);
            }
            let _ = sub.unsubscribe().await;
            deliver.call(Buffer::from(vec![2u8]), ThreadsafeFunctionCallMode::NonBlocking);
        });
        Ok(())
    }

    /// Ends pull `id` (its subscription goes; the server drops it).
    #[napi]
    pub fn end_pull(&self, id: u32) -> Result<()> {
        if let Some(end) = self.pulls.lock().map_err(|e| failed("pulls", e))?.remove(&id) {
            let _ = end.send(());
        }
        Ok(())
    }

    /// Answers the deliveries of `handles` with `body` (`+ACK`, `-NAK`, `+TERM`, ...); `done`
    /// is called with true once the server has read them (a request sent after them was
    /// answered with no drop of the connection between), or with false if the connection is
    /// down, dropped first, or the answer did not come in time. Their ack subjects are let go
    /// once read; until then (and after a failure) they stay, so they can be answered again,
    /// until `forget`.
    #[allow(clippy::needless_pass_by_value, reason = "napi passes owned values")]
    #[napi]
    pub fn answer(&self, handles: Uint32Array, body: String, done: Function<bool, ()>) -> Result<()> {
        let done: Done =
            done.build_threadsafe_function().weak::<true>().build().map_err(|e| failed("the answer's callback", e))?;
        let runtime = self.runtime()?;
        let answered: Vec<(u32, async_nats::Subject)> = {
            let replies = self.shared.replies.lock().map_err(|e| failed("replies", e))?;
            handles.iter().filter_map(|h| replies.get(h).map(|reply| (*h, reply.clone()))).collect()
        };
        let client = self.client.clone();
        let shared = Arc::clone(&self.shared);
        let body = bytes::Bytes::from(body);
        runtime.spawn(async move {
            let ok = confirmed(&client, &shared, &answered, body).await;
            if ok {
                if let Ok(mut replies) = shared.replies.lock() {
                    // Unless forgotten meanwhile and the handle given to another delivery.
                    for (handle, reply) in &answered {
                        if replies.get(handle) == Some(reply) {
                            replies.remove(handle);
                        }
                    }
                }
            }
            done.call(ok, ThreadsafeFunctionCallMode::NonBlocking);
        });
        Ok(())
    }

    /// Lets go of the ack subjects of `handles`: they will not be answered (again). Answers
    /// already given still go.
    #[allow(clippy::needless_pass_by_value, reason = "napi passes owned values")]
    #[napi]
    pub fn forget(&self, handles: Uint32Array) -> Result<()> {
        let mut replies = self.shared.replies.lock().map_err(|e| failed("replies", e))?;
        for handle in handles.iter() {
            replies.remove(handle);
        }
        Ok(())
    }

    /// How many deliveries the wire keeps an ack subject for.
    #[napi]
    pub fn kept(&self) -> Result<u32> {
        let replies = self.shared.replies.lock().map_err(|e| failed("replies", e))?;
        Ok(u32::try_from(replies.len()).unwrap_or(u32::MAX))
    }

    /// Closes the wire without waiting: what was sent is flushed (for up to a second) on a
    /// thread of its own, then its connection and tasks go.
    #[napi]
    pub fn close(&mut self) {
        if let Ok(mut replies) = self.shared.replies.lock() {
            replies.clear();
        }
        if let Some(runtime) = self.runtime.take() {
            let client = self.client.clone();
            std::thread::spawn(move || {
                runtime.block_on(async {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), client.flush()).await;
                });
                runtime.shutdown_background();
            });
        }
    }
}

/// Sends `body` to each of `answered`, then a `JetStream` API request (`$JS.API.INFO`); true once
/// the server answered it with the connection up all along: it reads one connection's messages
/// in order, so it had read the answers. The request needs no permission the pulls do not need
/// (a message of the wire's to its own inbox would: publishing there is often not allowed), and
/// times out (the client's request timeout): false then too, and the answers can be sent again.
async fn confirmed(
    client: &async_nats::Client,
    shared: &Shared,
    answered: &[(u32, async_nats::Subject)],
    body: bytes::Bytes,
) -> bool {
    let mut drops = shared.drops.subscribe();
    drops.borrow_and_update();
    if !shared.up.load(Ordering::SeqCst) {
        return false;
    }
    // Counted by the client before a new connection is used: one made meanwhile is a drop,
    // however the events are ordered.
    let connects = client.statistics().connects.load(Ordering::SeqCst);
    let sent = async {
        for (_, reply) in answered {
            if client.publish(reply.clone(), body.clone()).await.is_err() {
                return false;
            }
        }
        match client.request("$JS.API.INFO", bytes::Bytes::new()).await {
            Ok(_) => true,
            // Answered by the server all the same (an account without JetStream here).
            Err(error) => error.kind() == async_nats::RequestErrorKind::NoResponders,
        }
    };
    let ok = tokio::select! {
        biased;
        _ = drops.changed() => false,
        ok = sent => ok,
    };
    ok && client.statistics().connects.load(Ordering::SeqCst) == connects
}

fn write_record(out: &mut Vec<u8>, m: async_nats::Message, shared: &Shared) {
    let reply = m.reply.as_ref().filter(|r| r.starts_with("$JS.ACK."));
    let Some(reply) = reply else {
        let code = m.status.map_or(0, |s| s.as_u16());
        let description = m.description.unwrap_or_default();
        // A status line is short; one past a u16 is cut (at a character boundary).
        let mut cut = description.len().min(usize::from(u16::MAX));
        while !description.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(1);
        out.extend_from_slice(&code.to_le_bytes());
        out.extend_from_slice(&u16::try_from(cut).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(&description.as_bytes()[..cut]);
        return;
    };
    let fields = ack_fields(reply);
    let handle = {
        let Ok(mut replies) = shared.replies.lock() else { return };
        // Handles wrap after 2^32 deliveries: one still held is skipped.
        let mut handle = shared.next.fetch_add(1, Ordering::Relaxed);
        while replies.contains_key(&handle) {
            handle = shared.next.fetch_add(1, Ordering::Relaxed);
        }
        replies.insert(handle, reply.clone());
        handle
    };
    out.push(0);
    out.extend_from_slice(&handle.to_le_bytes());
    out.extend_from_slice(&(fields[0] as u32).to_le_bytes());
    out.extend_from_slice(&(fields[1] as f64).to_le_bytes());
    out.extend_from_slice(&(fields[3] as f64).to_le_bytes());
    let headers = m.headers.map(|h| header_block(&h)).unwrap_or_default();
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    out.extend_from_slice(&headers);
    out.extend_from_slice(&(m.payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&m.payload);
}

/// The delivery count, stream seq, consumer seq, time and pending of an ack subject.
fn ack_fields(reply: &str) -> [u64; 5] {
    // $JS.ACK.<stream>.<consumer>.<5 fields> (9 tokens), or with domain and account hash and a
    // token at the end (12). Read in one pass, nothing allocated: this runs for every delivery.
    let mut tokens = [""; 12];
    let mut count = 0;
    for token in reply.split('.') {
        if let Some(slot) = tokens.get_mut(count) {
            *slot = token;
        }
        count += 1;
    }
    let at = if count == 9 { 4 } else { 6 };
    let mut fields = [0u64; 5];
    for (field, token) in fields.iter_mut().zip(&tokens[at..]) {
        *field = token.parse().unwrap_or(0);
    }
    fields
}

/// Headers as `name: value` lines (a value per line, repeated names repeated).
fn header_block(headers: &async_nats::HeaderMap) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, values) in headers.iter() {
        for value in values {
            out.extend_from_slice(AsRef::<str>::as_ref(name).as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_str().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}
