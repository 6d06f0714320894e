//! Any bytes, cut into pieces at positions the input chooses, through the reader of streamed
//! GetStreamingEvents envelopes: an error per bad envelope, never a panic, and never more
//! envelopes than the input has closing `>`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskbridge::ews::ops::get_streaming_events::StreamingReader;

fuzz_target!(|data: &[u8]| {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let step = usize::from(step.max(1));
    let mut reader = StreamingReader::new(1 << 16);
    let mut envelopes = 0usize;
    for piece in body.chunks(step) {
        reader.push(piece);
        while reader.next_envelope().is_some() {
            envelopes += 1;
        }
    }
    let _ = reader.finish();
    assert!(envelopes <= body.iter().filter(|&&b| b == b'>').count());
});
