//! Watch handlers: the long-poll (`POST /api/v1/watch`), the same as a Server-Sent Events stream
//! (`POST /api/v1/watch/stream`), and a config's watchers on the whole cluster
//! (`GET …/configs/{c}/clients`). Both watch forms check the request, wait until this node has
//! applied the client's `since_revision` (504 if it cannot), then drive a [`WatchSession`].

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::Stream;

use super::configs::json_body;
use super::convert;
use super::problem::ApiError;
use super::request::{self, Caller, ConfigPath, Params};
use super::shed;
use super::ApiState;
use crate::metrics;
use crate::model::access::{Action, Scope};
use crate::model::{release, ConfigKey, Namespace};
use crate::service::watchers::WatchersQuery;
use crate::watch::presence::Cursor;
use crate::watch::{Step, WatchSession, WatchSpec};
use crate::wire::{self, WatchAnswer, WatchProgress};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const TIMEOUT_RANGE_MS: (u64, u64) = (1_000, 300_000);
const DEFAULT_INLINE_BYTES: u64 = 64 * 1024;
const MAX_INLINE_BYTES: u64 = 1024 * 1024;
const DEFAULT_PROGRESS: Duration = Duration::from_secs(5);
const PROGRESS_RANGE_MS: (u64, u64) = (100, 60_000);

fn invalid(detail: String) -> ApiError {
    ApiError::BadRequest { code: "invalid_watch", detail }
}

fn millis_within(
    name: &str,
    value: Option<u64>,
    (low, high): (u64, u64),
    default: Duration,
) -> Result<Duration, ApiError> {
    match value {
        None => Ok(default),
        Some(ms) if (low..=high).contains(&ms) => Ok(Duration::from_millis(ms)),
        Some(ms) => Err(invalid(format!("{name} must be {low} to {high}, got {ms}"))),
    }
}

/// A checked watch request: the session's spec, the long-poll timeout and the stream's progress
/// interval.
struct Checked {
    spec: WatchSpec,
    timeout: Duration,
    progress: Duration,
}

fn check(state: &ApiState, caller: &Caller, body: wire::WatchRequest) -> Result<Checked, ApiError> {
    let namespace = Namespace::new(&body.tenant, &body.app, &body.env)?;
    let target = Scope { path: vec![namespace.tenant.clone(), namespace.app.clone(), namespace.env.clone()] };
    caller.authorize(Action::Resolve, &target)?;
    check_body(body, namespace, state.service.watch.limits.max_configs_per_watch)
}

/// The checks of a watch body that need no state, for the fuzz target `watch_request`: the body
/// as the handler receives it after its JSON decoded, and the node's per-watch config limit.
#[doc(hidden)]
pub fn check_request(body: wire::WatchRequest, max_configs_per_watch: usize) -> Result<(), ApiError> {
    let namespace = Namespace::new(&body.tenant, &body.app, &body.env)?;
    check_body(body, namespace, max_configs_per_watch).map(|_| ())
}

fn check_body(body: wire::WatchRequest, namespace: Namespace, limit: usize) -> Result<Checked, ApiError> {
    let too_many = |what: &str, count: usize| ApiError::BadRequest {
        code: "too_many_configs",
        detail: format!("{what} names {count} configs; one watch may cover at most {limit}"),
    };
    if let Some(configs) = &body.configs {
        if configs.len() > limit {
            return Err(too_many("configs", configs.len()));
        }
        for name in configs {
            ConfigKey::in_namespace(&namespace, name)?;
        }
    }
    if body.known.len() > limit {
        return Err(too_many("known", body.known.len()));
    }
    for name in body.known.keys() {
        ConfigKey::in_namespace(&namespace, name)?;
        if body.configs.as_ref().is_some_and(|configs| !configs.contains(name)) {
            return Err(invalid(format!("known names {name:?}, which configs does not list; list it or drop it")));
        }
    }
    let labels = convert::labels_from_wire(&body.labels)?;
    if let Some(id) = &body.client_id {
        release::check_client_id(id).map_err(ApiError::InvalidLabels)?;
    }
    let inline_max_bytes = body.inline_max_bytes.unwrap_or(DEFAULT_INLINE_BYTES);
    if inline_max_bytes > MAX_INLINE_BYTES {
        return Err(invalid(format!("inline_max_bytes must be at most {MAX_INLINE_BYTES}, got {inline_max_bytes}")));
    }
    let timeout = millis_within("timeout_ms", body.timeout_ms, TIMEOUT_RANGE_MS, DEFAULT_TIMEOUT)?;
    let progress = millis_within("progress_ms", body.progress_ms, PROGRESS_RANGE_MS, DEFAULT_PROGRESS)?;
    let spec = WatchSpec {
        namespace,
        configs: body.configs,
        labels,
        client_id: body.client_id,
        known: body.known,
        since_revision: body.since_revision,
        inline_max_bytes,
    };
    Ok(Checked { spec, timeout, progress })
}

/// The long-poll timeout plus up to 1/16 of it, so clients that started together spread out.
fn jittered(timeout: Duration) -> Duration {
    timeout + timeout.mul_f64(rand::random::<f64>() / 16.0)
}

fn count(outcome: &str) {
    metrics::global().watch_responses.with_label_values(&[outcome]).inc();
}

fn observe_notify(noticed: Option<Instant>) {
    if let Some(at) = noticed {
        metrics::global().watch_notify_seconds.observe(at.elapsed().as_secs_f64());
    }
}

/// Fences on `since_revision`, opens the session and compares what the client holds.
async fn start(state: &ApiState, spec: WatchSpec) -> Result<(WatchSession, Option<WatchAnswer>), ApiError> {
    request::wait_applied(state, spec.since_revision).await?;
    let mut session = WatchSession::open(state.service.watch.clone(), spec)?;
    let first = session.first()?;
    Ok((session, first))
}

fn no_store_headers(revision: u64) -> [(HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (HeaderName::from_static("x-conflux-revision"), HeaderValue::from(revision)),
    ]
}

/// `POST /api/v1/watch`
pub async fn long_poll(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    slot: Option<Extension<shed::Slot>>,
    body: Result<Json<wire::WatchRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let answered = long_poll_answer(&state, &caller, slot.map(|Extension(slot)| slot), body).await;
    match &answered {
        Ok(answer) if answer.changes.is_empty() && answer.deleted.is_empty() => count("timeout"),
        Ok(_) => count("changed"),
        Err(ApiError::Unavailable { .. }) => count("unavailable"),
        Err(_) => count("refused"),
    }
    let answer = answered?;
    Ok((no_store_headers(answer.revision), Json(answer)).into_response())
}

async fn long_poll_answer(
    state: &ApiState,
    caller: &Caller,
    slot: Option<shed::Slot>,
    body: Result<Json<wire::WatchRequest>, JsonRejection>,
) -> Result<WatchAnswer, ApiError> {
    let checked = check(state, caller, json_body(state, body)?)?;
    let (mut session, first) = start(state, checked.spec).await?;
    if let Some(answer) = first {
        return Ok(answer);
    }
    // Parked: counted by the watcher quota now, not among the executing requests.
    if let Some(slot) = slot {
        slot.release();
    }
    match session.next(Instant::now() + jittered(checked.timeout)).await? {
        Step::Changed { answer, noticed } => {
            observe_notify(noticed);
            Ok(answer)
        }
        Step::Quiet { revision } => Ok(WatchAnswer { revision, changes: Vec::new(), deleted: Vec::new() }),
        Step::Unavailable(availability) => Err(ApiError::unavailable(availability)),
    }
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get("last-event-id") else { return Ok(None) };
    let text = value.to_str().unwrap_or("").trim();
    text.parse().map(Some).map_err(|_| ApiError::BadRequest {
        code: "invalid_last_event_id",
        detail: format!("Last-Event-ID must be a revision this stream sent, got {text:?}"),
    })
}

fn changes_event(answer: &WatchAnswer) -> Event {
    count("changed");
    Event::default().event("changes").id(answer.revision.to_string()).json_data(answer).unwrap_or_default()
}

fn progress_event(revision: u64) -> Event {
    count("timeout");
    let progress = WatchProgress { revision };
    Event::default().event("progress").id(revision.to_string()).json_data(progress).unwrap_or_default()
}

fn problem_event(error: ApiError) -> Event {
    count(if matches!(error, ApiError::Unavailable { .. }) { "unavailable" } else { "refused" });
    Event::default().event("unavailable").json_data(error.problem()).unwrap_or_default()
}

/// Where a stream is: the first comparison still to send, then one event per wake or interval,
/// until the node stops serving.
struct Streaming {
    session: WatchSession,
    first: Option<Option<WatchAnswer>>,
    progress: Duration,
    ended: bool,
}

impl Streaming {
    async fn next_event(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        if let Some(first) = self.first.take() {
            return Some(match first {
                Some(answer) => changes_event(&answer),
                None => progress_event(self.session.revision()),
            });
        }
        let event = match self.session.next(Instant::now() + self.progress).await {
            Ok(Step::Changed { answer, noticed }) => {
                observe_notify(noticed);
                changes_event(&answer)
            }
            Ok(Step::Quiet { revision }) => progress_event(revision),
            Ok(Step::Unavailable(availability)) => {
                self.ended = true;
                problem_event(ApiError::unavailable(availability))
            }
            Err(e) => {
                self.ended = true;
                problem_event(e.into())
            }
        };
        Some(event)
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut streaming| async move {
            let event = streaming.next_event().await?;
            Some((Ok(event), streaming))
        })
    }
}

/// `POST /api/v1/watch/stream` (`Last-Event-ID` raises `since_revision`)
pub async fn stream(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Json<wire::WatchRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let opened = async {
        let mut checked = check(&state, &caller, json_body(&state, body)?)?;
        if let Some(last) = last_event_id(&headers)? {
            checked.spec.since_revision = checked.spec.since_revision.max(last);
        }
        let (session, first) = start(&state, checked.spec).await?;
        Ok::<_, ApiError>(Streaming { session, first: Some(first), progress: checked.progress, ended: false })
    };
    let streaming = opened
        .await
        .inspect_err(|e| count(if matches!(e, ApiError::Unavailable { .. }) { "unavailable" } else { "refused" }))?;
    let revision = streaming.session.revision();
    let keep_alive = KeepAlive::new().interval(Duration::from_secs(15));
    Ok((no_store_headers(revision), Sse::new(streaming.into_stream()).keep_alive(keep_alive)).into_response())
}

/// `GET /api/v1/configs/{t}/{a}/{e}/{c}/clients?limit=&cursor=`
pub async fn clients(
    State(state): State<ApiState>,
    path: ConfigPath,
    params: Params,
) -> Result<Json<wire::ConfigWatchers>, ApiError> {
    let key = request::config_key(path)?;
    let params = request::query(params)?;
    let page = request::pagination(&params)?;
    let after = match page.cursor.as_deref() {
        None => None,
        Some(text) => Some(Cursor::parse(text).ok_or_else(|| request::bad_cursor(text))?),
    };
    let name = key.name.clone();
    let found = state.service.cluster_watchers(WatchersQuery { key, after, limit: page.limit }).await;
    Ok(Json(wire::ConfigWatchers {
        config: name,
        watchers: found.page.watchers.into_iter().map(|listed| listed.watcher).collect(),
        versions: found.page.versions.into_iter().map(|(version, n)| (version.to_string(), n)).collect(),
        total: found.page.total,
        unreachable: found.unreachable,
        next_cursor: found.next.map(|cursor| cursor.text()),
    }))
}
