//! Fuzz target `client_json`: JSON bodies of the client API that are checked without state: the
//! watch request (`wire::WatchRequest`, then `api::watch::check_request`, the same checks the
//! long-poll and stream handlers run) and a release spec (`wire::ReleaseSpec`, then
//! `api::convert::rules_from_wire` and `model::release::validate`, as `PUT .../release` does).
//! Every refusal must map to a 4xx.
//!
//! The first byte selects the body type; the rest is the JSON.

#![no_main]

use axum::response::IntoResponse;
use conflux::api::problem::ApiError;
use conflux::api::{convert, watch};
use conflux::model::release;
use conflux::wire;
use libfuzzer_sys::fuzz_target;

/// The node's default `--max-configs-per-watch`.
const MAX_CONFIGS_PER_WATCH: usize = 100;

fn refused(result: Result<(), ApiError>) {
    if let Err(e) = result {
        let status = e.into_response().status();
        assert!(status.is_client_error(), "bad input answered {status}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    if selector % 2 == 0 {
        if let Ok(request) = serde_json::from_slice::<wire::WatchRequest>(body) {
            refused(watch::check_request(request, MAX_CONFIGS_PER_WATCH));
        }
    } else if let Ok(spec) = serde_json::from_slice::<wire::ReleaseSpec>(body) {
        refused(
            convert::rules_from_wire(&spec.rules).and_then(|rules| {
                release::validate(&rules, |_| true).map_err(|e| ApiError::InvalidRules(e.to_string()))
            }),
        );
    }
});
