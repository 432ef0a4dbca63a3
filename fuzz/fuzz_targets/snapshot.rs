//! Snapshots from outside (`store.import(bytes)`): refused whole with an error, or imported; an
//! imported one exports and imports again to the same bytes. A checksum guards a snapshot's body,
//! so random bytes rarely get past it: two of the three modes seal the body they test with a valid
//! envelope, to reach the decoding and the checks behind it.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Magic and format (8 bytes), then the body's CRC-32 (4 bytes), then the body.
const ENVELOPE: usize = 12;

#[path = "common.rs"]
mod common;
use common::{store, write};

/// A store with keys in two namespaces, history and a TTL: a realistic body to mutate.
fn populated() -> Vec<u8> {
    let mut s = store();
    let a = s.namespace("alpha").expect("a valid name");
    let b = s.namespace("beta").expect("a valid name");
    for (i, (ns, key, value, ttl)) in
        [(a, "k1", "one", 0.0), (a, "k1", "uno", 0.0), (b, "k2", "two", 5_000.0), (a, "k3", "", 0.0)]
            .into_iter()
            .enumerate()
    {
        write(&mut s, 1, ns, key, value, ttl, 1_000.0 + i as f64);
    }
    s.export()
}

fn seal(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = header[..8].to_vec();
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = match mode % 3 {
        0 => rest.to_vec(),
        1 => seal(&store().export(), rest),
        _ => {
            // Overwrites of a real body: (u16 position, u8 value) triples.
            let valid = populated();
            let mut body = valid[ENVELOPE..].to_vec();
            for edit in rest.chunks_exact(3) {
                let at = usize::from(u16::from_le_bytes([edit[0], edit[1]])) % body.len();
                body[at] = edit[2];
            }
            // A trailing odd byte cuts the body short.
            if rest.len() % 3 == 1 {
                body.truncate(usize::from(rest[rest.len() - 1]) % body.len());
            }
            seal(&valid, &body)
        }
    };
    let mut s = store();
    let imported = s.import(&bytes);
    // The harness's own check: an untouched real snapshot imports.
    if mode % 3 == 2 && rest.is_empty() {
        imported.as_ref().expect("an untouched snapshot imports");
    }
    if imported.is_ok() {
        let exported = s.export();
        let mut again = store();
        again.import(&exported).expect("an exported snapshot imports");
        assert_eq!(again.export(), exported, "a snapshot's round trip changes nothing");
    }
});
