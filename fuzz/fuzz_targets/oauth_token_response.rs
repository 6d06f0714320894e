//! Any bytes as a token endpoint's answer, read as the OAuth client-credentials flow reads it;
//! the first byte picks the HTTP status (success, a refusal or a server error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskbridge::ews::transport::auth::parse_oauth_token_response;
use taskbridge::secret::Secret;

const SECRET: &str = "fuzz-client-secret";

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let status = [200, 400, 401, 500][usize::from(pick % 4)];
    match parse_oauth_token_response(status, body, "app", &Secret::new(SECRET)) {
        Ok((_, lifetime)) => assert!(lifetime.as_secs() <= 24 * 3600, "lifetime is bounded"),
        Err(e) => {
            let text = e.to_string();
            assert!(!text.contains(SECRET), "the client secret reached an error");
            assert!(
                !text.contains(['\r', '\n']),
                "a line break reached an error"
            );
        }
    }
});
