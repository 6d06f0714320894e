//! Any bytes as the body of each PM API request that takes one (policy, approve, reject),
//! through the API's whole request path over a real store.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use taskbridge::pm::embedded::{EmbeddedHost, PmApi, pm_api};
use taskbridge::secret::Secret;

const TOKEN: &str = "fuzz-token";

struct World {
    rt: tokio::runtime::Runtime,
    api: PmApi,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let host = rt.block_on(EmbeddedHost::open(dir.path())).expect("store");
        World {
            rt,
            api: pm_api(host, Secret::new(TOKEN)),
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let guid = "c0ffee00-1234-4abc-8def-0123456789ab";
    for (method, path) in [
        ("PUT", format!("/pm/projects/{guid}/policy")),
        ("POST", "/pm/updates/1/approve".to_string()),
        ("POST", "/pm/updates/1/reject".to_string()),
    ] {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::copy_from_slice(data)))
            .expect("request");
        let reply = w.rt.block_on(w.api.handle(request));
        assert!(
            reply.status().as_u16() < 500,
            "a body made the API fail: {}",
            reply.status()
        );
    }
});
