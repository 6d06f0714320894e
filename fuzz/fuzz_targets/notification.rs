//! Any bytes as a push notification body, decoded as the listener decodes them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskbridge::ews::ops::{self, send_notification::SendNotification};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, call)) = ops::decode_request::<SendNotification>(data, 1 << 20) {
        for n in call.notifications() {
            for e in &n.events {
                let _ = (e.watermark(), e.object().and_then(|o| o.item_id()));
            }
        }
    }
});
