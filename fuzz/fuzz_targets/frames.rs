//! Frames from outside: a publish, request or reply batch (a reply from any endpoint, or from the
//! requester's own) is whatever bytes a host hands over.
//! Each must be refused with an error or accepted whole; accepted frames must then drain. Half the
//! inputs are raw bytes; the other half overwrite bytes of a batch of three valid frames, to reach
//! the checks past the first length and version fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orrery_core::bus::wire;
use orrery_core::{frame, Bus, BusConfig, MAIN_ENDPOINT};

/// Three valid frames on the subscribed channels, overwritten by (u16 position, u8 value) triples.
fn mutated(channels: &[u32], edits: &[u8]) -> Vec<u8> {
    let mut batch = Vec::new();
    for (i, &channel) in channels.iter().enumerate() {
        batch.extend(frame::encode(
            channel,
            i as u8 % 4,
            if i == 1 { 5_000.0 } else { 0.0 },
            format!("id-{i}").as_bytes(),
            b"payload",
        ));
    }
    for edit in edits.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([edit[0], edit[1]])) % batch.len();
        batch[at] = edit[2];
    }
    batch
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the call and the mode; the rest is the batch, or edits of a valid one.
    let Some((&call, rest)) = data.split_first() else { return };
    let mut bus = Bus::new(BusConfig { max_message_bytes: 4096, ..BusConfig::default() });
    // A subscriber on each channel, so accepted frames are delivered and drained.
    let mut channels = Vec::new();
    for name in ["a", "b", "c"] {
        let channel = bus.channel(name).expect("a valid name");
        wire::subscribe(&mut bus, MAIN_ENDPOINT, channel, 0, 0.0, 16.0, 1).expect("valid options");
        channels.push(channel);
    }
    let owned;
    let batch = if call & 0x80 == 0 {
        rest
    } else {
        owned = mutated(&channels, rest);
        &owned[..]
    };
    let result = match call % 4 {
        0 => bus.publish_from(MAIN_ENDPOINT, batch, 1_000.0).map(|_| ()),
        1 => bus.request(MAIN_ENDPOINT, batch, 50.0, 1_000.0).map(|_| ()),
        2 => bus.reply(batch).map(|_| ()),
        _ => {
            // A reply sent from the endpoint that made a request settles it in place: open one
            // first, so a reply carrying its token (the core's tokens are small) reaches that path.
            let request = frame::encode(channels[0], 0, 0.0, b"q", b"payload");
            bus.request(MAIN_ENDPOINT, &request, 50.0, 1_000.0).expect("a valid request");
            bus.reply_from(MAIN_ENDPOINT, batch).map(|_| ())
        }
    };
    // The harness's own check: three untouched valid frames publish (else the mutated mode would
    // only ever test refusals).
    if call & 0x80 != 0 && call % 4 == 0 && rest.len() < 3 {
        result.expect("a batch of valid frames publishes");
    }
    let mut out = vec![0u8; 64 * 1024];
    // Past every deadline: request timeouts fire too.
    for _ in 0..4 {
        let r = wire::drain(&mut bus, MAIN_ENDPOINT, &mut out, 10_000.0);
        if r < 0.0 {
            out.resize(-r as usize, 0);
        } else if r as u64 % 2 == 1 {
            break;
        }
    }
});
