//! Publishes N messages of a payload through one Rust client connection, `window` batches of
//! `batch` in flight, every one acknowledged by the server, and prints
//! `{"msgs":N,"ms":<first publish to last ack>}`.
//!
//!   orrery-client-bench redis <url> <stream key> <n> <batch> <window> <payload bytes>
//!   orrery-client-bench nats <url> <subject> <n> <batch> <window> <payload bytes>
//!
//! Redis: XADD <key> * f <payload>, a pipeline per batch on one multiplexed connection.
//! NATS: JetStream publishes to a subject of an existing stream; acks awaited in publish order,
//! at most batch x window outstanding.
//!
//!   orrery-client-bench nats-consume <url> <stream> <durable consumer> <n> <batch>
//!
//! Reads N messages through an existing durable pull consumer (pulls of up to `batch` kept
//! going), acknowledging each, and prints the same line (first pull to the last ack flushed).
//!
//!   orrery-client-bench redb-put <file> <first key> <batch> <round ms>
//!
//! The store suite's durable-put done by redb alone (see `redb_put`): prints
//! `{"msgs":<puts>,"ms":<round>,"p99_us":<a batch's p99>}`; `redb-count <file>` prints how many
//! keys the file holds.
use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

mod redb_put;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 6 && args[1] == "redb-put" {
        let round = std::time::Duration::from_millis(args[5].parse()?);
        let done = redb_put::run(&args[2], args[3].parse()?, args[4].parse()?, round)?;
        println!("{{\"msgs\":{},\"ms\":{:.3},\"p99_us\":{:.2}}}", done.puts, done.ms, done.p99_us);
        return Ok(());
    }
    if args.len() == 3 && args[1] == "redb-count" {
        println!("{}", redb_put::count(&args[2])?);
        return Ok(());
    }
    if args.len() == 7 && args[1] == "nats-consume" {
        let n: usize = args[5].parse()?;
        let batch: usize = args[6].parse()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let ms = runtime.block_on(nats_consume(&args[2], &args[3], &args[4], n, batch))?;
        println!("{{\"msgs\":{n},\"ms\":{ms:.3}}}");
        return Ok(());
    }
    if args.len() != 8 {
        return Err(format!("usage: {} redis|nats <url> <target> <n> <batch> <window> <payload bytes>", args[0]).into());
    }
    let n: usize = args[4].parse()?;
    let batch: usize = args[5].parse()?;
    let window: usize = args[6].parse()?;
    let payload = Bytes::from(vec![b'x'; args[7].parse()?]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let ms = runtime.block_on(async {
        match args[1].as_str() {
            "redis" => redis_publish(&args[2], &args[3], n, batch, window, payload).await,
            "nats" => nats_publish(&args[2], &args[3], n, batch, window, payload).await,
            other => Err(format!("unknown client {other}").into()),
        }
    })?;
    println!("{{\"msgs\":{n},\"ms\":{ms:.3}}}");
    Ok(())
}

async fn redis_publish(
    url: &str,
    key: &str,
    n: usize,
    batch: usize,
    window: usize,
    payload: Bytes,
) -> Result<f64, Error> {
    let client = redis::Client::open(url)?;
    let con = client.get_multiplexed_async_connection().await?;
    let start = Instant::now();
    let mut sent = 0;
    let mut in_flight = VecDeque::new();
    while sent < n || !in_flight.is_empty() {
        while sent < n && in_flight.len() < window {
            let count = batch.min(n - sent);
            let mut pipe = redis::pipe();
            for _ in 0..count {
                pipe.cmd("XADD").arg(key).arg("*").arg("f").arg(payload.as_ref());
            }
            let mut con = con.clone();
            in_flight.push_back(tokio::spawn(async move { pipe.query_async::<Vec<String>>(&mut con).await }));
            sent += count;
        }
        let ids = in_flight.pop_front().expect("a batch in flight").await??;
        if ids.is_empty() {
            return Err("an empty reply to a pipeline of XADDs".into());
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

async fn nats_publish(
    url: &str,
    subject: &str,
    n: usize,
    batch: usize,
    window: usize,
    payload: Bytes,
) -> Result<f64, Error> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    let outstanding = batch * window;
    let start = Instant::now();
    let mut acks = VecDeque::with_capacity(outstanding);
    for _ in 0..n {
        if acks.len() == outstanding {
            let ack: async_nats::jetstream::context::PublishAckFuture = acks.pop_front().expect("an ack outstanding");
            ack.await?;
        }
        acks.push_back(js.publish(subject.to_string(), payload.clone()).await?);
    }
    for ack in acks {
        ack.await?;
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

async fn nats_consume(url: &str, stream: &str, consumer: &str, n: usize, batch: usize) -> Result<f64, Error> {
    use futures_util::StreamExt;
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client.clone());
    let consumer: async_nats::jetstream::consumer::PullConsumer = js.get_consumer_from_stream(consumer, stream).await?;
    let start = Instant::now();
    let mut messages = consumer.stream().max_messages_per_batch(batch).messages().await?;
    let mut read = 0;
    while read < n {
        let message = messages.next().await.ok_or("the pull ended")??;
        message.ack().await.map_err(|e| e.to_string())?;
        read += 1;
    }
    client.flush().await?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}
