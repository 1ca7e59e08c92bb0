//! Stream entries as Redis may hand them over: any field names and values, any entry id. The
//! decoders must return an event or a `DecodeError`, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redstream_core::EventLimits;
use redstream_core::wire;

fuzz_target!(|data: &[u8]| {
    let limits = EventLimits::default().with_max_encoded_bytes(64 * 1024);
    let _ = wire::decode_envelope(data, &limits);
    // The first line is the entry id; the rest are fields, name and value split at the first
    // `=`, one per line.
    let mut lines = data.split(|&b| b == b'\n');
    let id = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let fields: Vec<(&[u8], &[u8])> = lines
        .map(|line| match line.iter().position(|&b| b == b'=') {
            Some(at) => (&line[..at], &line[at + 1..]),
            None => (line, &[][..]),
        })
        .collect();
    let _ = wire::decode_stream_entry(&id, fields.iter().copied(), &limits);
    let _ = wire::entry_id_time(&id);
});
