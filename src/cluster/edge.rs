//! Pulling a stream from its origin when a viewer asks for it here.
//!
//! One task per pulled stream: it finds the origin in the directory,
//! reads the stream's description, relays it onto this node's bus (a
//! [`Registry::relay`]) and pulls every track the catalog lists, one HTTP
//! response each. Viewers' keyframe requests go back to the origin,
//! at most one per track per [`KEYFRAME_EVERY`].
//!
//! When the origin is lost (the pull ends, or nothing arrives for
//! [`READ_IDLE`]) the relay is interrupted, as a publisher's leaving
//! interrupts a broadcast, and the task looks for the origin again,
//! backing off, for as long as the bus's reconnect grace keeps the
//! broadcast: when the publisher returns (here or on another origin) the
//! viewers continue after a discontinuity. The pull stops, and the
//! broadcast ends, once no viewer has watched (or been joining: offered a
//! WebRTC session, not yet answered) for `cluster.idle_timeout`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::Instrument;

use super::wire::{PulledFrame, StreamInfo, TrackReader};
use crate::bus::{
    BroadcastStatus, Demand, Frame, PublishError, Registry, StreamPath, Supply, TrackProducer,
};
use crate::config::ClusterConfig;
use crate::http::client::HttpsClient;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::viewers::ViewerCounts;

/// A pull that receives nothing for this long has lost its origin.
pub const READ_IDLE: Duration = Duration::from_secs(4);
/// Keyframe requests sent to the origin at most this often per track.
pub const KEYFRAME_EVERY: Duration = Duration::from_secs(1);
/// A stream that could not be found is not looked for again sooner (a
/// flood of requests for names nobody publishes costs one query each).
const NOT_FOUND_FOR: Duration = Duration::from_secs(1);
/// How long a description or a pull's response headers may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// The first and the longest wait between attempts to reach the origin.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(4));
/// Streams pulled at once, at most.
const MAX_PULLS: usize = 1000;
/// Names one client address may have being looked for, or remembered as
/// not found, at once: past it, its requests for other names are answered
/// "not found" without a directory query, so one client cannot fill
/// [`MAX_PULLS`] with names nobody publishes and keep others' streams from
/// being pulled.
const MAX_LOOKUPS_PER_CLIENT: usize = 16;
/// The largest description taken from an origin.
const MAX_DESCRIPTION: usize = 1 << 20;
/// Directory lookups for redirects under way at once, at most; past it a
/// viewer's demand is pulled as without `cluster.redirect`.
const MAX_REDIRECT_LOOKUPS: usize = 64;
/// Demands that may wait on one redirect lookup under way, at most (the
/// viewers of a stream that starts, asking at once); past it they are
/// answered "not found".
const MAX_WAITING_ON_LOOKUP: usize = 4096;
/// A relay that ran this long was a success: losing it starts a new grace.
const RELAY_OK: Duration = Duration::from_secs(5);

/// A pulled stream's progress, for the viewers waiting on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PullState {
    Starting,
    /// On the bus.
    Relaying,
    /// Not found, or over.
    Gone,
}

/// What a redirect lookup found, for the demand loop.
enum Lookup {
    /// The viewer (at this address) was sent to the origin at `url`.
    Redirected {
        path: StreamPath,
        client: Option<std::net::IpAddr>,
        url: String,
    },
    /// No origin lists the stream: remembered as not found.
    NotFound(Demand),
    /// Listed without a public URL, or the directory could not be read:
    /// pulled here.
    Pull(Demand),
    /// The directory did not answer in time, or the lookup failed: the
    /// viewer was answered "not found" (its reply dropped).
    Unanswered {
        path: StreamPath,
        client: Option<std::net::IpAddr>,
    },
}

impl Lookup {
    fn path(&self) -> &StreamPath {
        match self {
            Lookup::Redirected { path, .. } | Lookup::Unanswered { path, .. } => path,
            Lookup::NotFound(d) | Lookup::Pull(d) => &d.path,
        }
    }

    fn client(&self) -> Option<std::net::IpAddr> {
        match self {
            Lookup::Redirected { client, .. } | Lookup::Unanswered { client, .. } => *client,
            Lookup::NotFound(d) | Lookup::Pull(d) => d.client,
        }
    }
}

/// A finished redirect lookup: its client has one lookup fewer under way,
/// and the demands that waited on it are answered, or queued in
/// `requeued` to be pulled when the stream is to be pulled here. The
/// lookup's own demand, when it still needs an answer here (`true`: as
/// not found).
fn settle(
    lookup: Lookup,
    redirecting: &mut HashMap<std::net::IpAddr, usize>,
    looking: &mut HashMap<StreamPath, Vec<Demand>>,
    requeued: &mut VecDeque<Demand>,
) -> Option<(Demand, bool)> {
    if let Some(c) = lookup.client()
        && let Some(n) = redirecting.get_mut(&c)
    {
        *n -= 1;
        if *n == 0 {
            redirecting.remove(&c);
        }
    }
    let waiting = looking.remove(lookup.path()).unwrap_or_default();
    let (answer, next) = match lookup {
        Lookup::Redirected { url, .. } => (Supply::Elsewhere(url), None),
        Lookup::Unanswered { .. } => (Supply::Absent, None),
        Lookup::NotFound(d) => (Supply::Absent, Some((d, true))),
        Lookup::Pull(d) => {
            requeued.extend(waiting.into_iter().map(|mut w| {
                w.may_redirect = false;
                w
            }));
            return Some((d, false));
        }
    };
    for w in waiting {
        let _ = w.reply.send(answer.clone());
    }
    next
}

/// A stream the edge pulls, or looked for.
struct Pull {
    state: watch::Receiver<PullState>,
    since: Instant,
    /// The address whose request started it.
    client: Option<std::net::IpAddr>,
}

#[derive(Clone)]
pub struct Edge {
    pub registry: Registry,
    pub store: Arc<Store>,
    pub viewers: Arc<ViewerCounts>,
    pub config: ClusterConfig,
    /// This node's name in the directory.
    pub node: String,
    /// The bus's reconnect grace: how long a lost origin is looked for.
    pub grace: Duration,
    pub client: HttpsClient,
}

impl Edge {
    /// Answers viewers' demands until `shutdown`.
    pub async fn run(self, mut demands: mpsc::Receiver<Demand>, mut shutdown: Shutdown) {
        // Each pull: its state, when it started, and the address whose
        // request started it.
        let mut pulls: HashMap<StreamPath, Pull> = HashMap::new();
        // What redirect lookups found, and how many each client started
        // that are under way (they count against its share, as its pulls
        // do). Later demands for a name being looked up wait on that
        // lookup's answer, as they would on its pull.
        let (found_tx, mut found) = mpsc::channel::<Lookup>(MAX_REDIRECT_LOOKUPS);
        let lookups = Arc::new(Semaphore::new(MAX_REDIRECT_LOOKUPS));
        let mut redirecting: HashMap<std::net::IpAddr, usize> = HashMap::new();
        let mut looking: HashMap<StreamPath, Vec<Demand>> = HashMap::new();
        // Demands that waited on a lookup which found the stream must be
        // pulled: taken before new ones.
        let mut requeued: VecDeque<Demand> = VecDeque::new();
        loop {
            let (demand, not_found) = if let Some(d) = requeued.pop_front() {
                (d, false)
            } else {
                tokio::select! {
                    _ = shutdown.wait() => return,
                    d = demands.recv() => match d {
                        Some(d) => (d, false),
                        None => return,
                    },
                    Some(lookup) = found.recv() => {
                        match settle(lookup, &mut redirecting, &mut looking, &mut requeued) {
                            Some(next) => next,
                            None => continue,
                        }
                    }
                }
            };
            let now = Instant::now();
            pulls.retain(|_, p| match *p.state.borrow() {
                PullState::Gone => now.duration_since(p.since) < NOT_FOUND_FOR,
                _ => true,
            });
            if not_found && !pulls.contains_key(&demand.path) {
                // Remembered as a pull that found nothing: the same names
                // are not looked up again for a while, and they count
                // against the client's share (a pull started meanwhile,
                // for a viewer that cannot be redirected, is waited on).
                if pulls.len() < MAX_PULLS {
                    let (_, gone) = watch::channel(PullState::Gone);
                    pulls.insert(
                        demand.path.clone(),
                        Pull {
                            state: gone,
                            since: now,
                            client: demand.client,
                        },
                    );
                }
                let _ = demand.reply.send(Supply::Absent);
                continue;
            }
            let state = match pulls.get(&demand.path) {
                Some(p) => p.state.clone(),
                None => {
                    if demand.may_redirect
                        && let Some(waiting) = looking.get_mut(&demand.path)
                    {
                        if waiting.len() < MAX_WAITING_ON_LOOKUP {
                            waiting.push(demand);
                        } else {
                            let _ = demand.reply.send(Supply::Absent);
                        }
                        continue;
                    }
                    let client_busy = demand.client.is_some_and(|c| {
                        let looking = pulls
                            .values()
                            .filter(|p| {
                                p.client == Some(c) && *p.state.borrow() != PullState::Relaying
                            })
                            .count();
                        looking + redirecting.get(&c).copied().unwrap_or(0)
                            >= MAX_LOOKUPS_PER_CLIENT
                    });
                    if client_busy {
                        metrics::counter!("streamd_cluster_lookups_refused_total").increment(1);
                        let _ = demand.reply.send(Supply::Absent);
                        continue;
                    }
                    // Sent to the origin's public URL, when it has one,
                    // rather than pulled here (a pull already under way is
                    // served here, above). Past the lookups allowed at
                    // once, pulled as without `cluster.redirect`.
                    if demand.may_redirect
                        && self.config.redirect
                        && let Ok(permit) = lookups.clone().try_acquire_owned()
                    {
                        if let Some(c) = demand.client {
                            *redirecting.entry(c).or_default() += 1;
                        }
                        looking.insert(demand.path.clone(), Vec::new());
                        let edge = self.clone();
                        let found_tx = found_tx.clone();
                        tokio::spawn(async move {
                            let (path, client) = (demand.path.clone(), demand.client);
                            // In its own task, so that even a panic in it
                            // is answered (and its waiters and its
                            // client's count with it).
                            let lookup = tokio::spawn(async move {
                                tokio::time::timeout(REQUEST_TIMEOUT, edge.redirect_or_pull(demand))
                                    .await
                            })
                            .await;
                            let lookup = match lookup {
                                Ok(Ok(lookup)) => lookup,
                                _ => Lookup::Unanswered { path, client },
                            };
                            let _ = found_tx.send(lookup).await;
                            drop(permit);
                        });
                        continue;
                    }
                    if pulls.len() >= MAX_PULLS {
                        let _ = demand.reply.send(Supply::Absent);
                        continue;
                    }
                    let (tx, rx) = watch::channel(PullState::Starting);
                    pulls.insert(
                        demand.path.clone(),
                        Pull {
                            state: rx.clone(),
                            since: now,
                            client: demand.client,
                        },
                    );
                    let edge = self.clone();
                    let path = demand.path.clone();
                    let shutdown = shutdown.clone();
                    let span = tracing::info_span!("pull", stream = %path);
                    tokio::spawn(
                        async move {
                            edge.pull(path, &tx, shutdown).await;
                            let _ = tx.send(PullState::Gone);
                        }
                        .instrument(span),
                    );
                    rx
                }
            };
            // The viewer's request waits for the outcome, not this loop,
            // and not after the viewer gave up.
            tokio::spawn(async move {
                let (mut state, mut reply) = (state, demand.reply);
                let ok = tokio::select! {
                    s = state.wait_for(|s| *s != PullState::Starting) => {
                        s.is_ok_and(|s| *s == PullState::Relaying)
                    }
                    () = reply.closed() => return,
                };
                let _ = reply.send(if ok { Supply::Here } else { Supply::Absent });
            });
        }
    }

    /// Answers `demand` with its origin's public URL when the directory
    /// lists one (and it is not this node). A name no origin lists goes
    /// back to be remembered as not found; a stream listed without a
    /// public URL, or a directory that cannot be read, goes back to be
    /// pulled.
    async fn redirect_or_pull(&self, mut demand: Demand) -> Lookup {
        let expiry = i64::try_from(self.config.expiry.as_millis()).unwrap_or(i64::MAX);
        let found = self
            .store
            .locate_stream(demand.path.app(), demand.path.stream(), expiry)
            .await;
        match found {
            Ok(Some(o)) if o.node != self.node && !o.public_url.is_empty() => {
                metrics::counter!("streamd_cluster_redirects_total").increment(1);
                let url = o.public_url.trim_end_matches('/').to_owned();
                let (path, client) = (demand.path.clone(), demand.client);
                let _ = demand.reply.send(Supply::Elsewhere(url.clone()));
                Lookup::Redirected { path, client, url }
            }
            Ok(None) => Lookup::NotFound(demand),
            Ok(Some(_)) | Err(_) => {
                demand.may_redirect = false;
                Lookup::Pull(demand)
            }
        }
    }

    /// Pulls `path` until its viewers leave, its origin cannot be found
    /// again within the grace, or `shutdown`.
    async fn pull(&self, path: StreamPath, state: &watch::Sender<PullState>, shutdown: Shutdown) {
        let mut backoff = BACKOFF.0;
        // Set once the stream was relayed: how long it has been lost.
        let mut lost_since: Option<Instant> = None;
        let mut idle_since = Instant::now();
        loop {
            let outcome = self
                .session(&path, state, shutdown.clone(), &mut idle_since)
                .await;
            match outcome {
                Outcome::NotFound(why) if *state.borrow() == PullState::Starting => {
                    tracing::debug!(stream = %path, why, "not found in the cluster");
                    return;
                }
                Outcome::Stop(why) => {
                    tracing::info!(stream = %path, why, "stopped pulling");
                    self.registry.end_relay(&path);
                    return;
                }
                Outcome::NotFound(why) | Outcome::Lost(why) => {
                    let since = *lost_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.grace
                        || self
                            .registry
                            .get(&path)
                            .is_none_or(|b| b.status() == BroadcastStatus::Ended)
                    {
                        tracing::info!(stream = %path, why, "the origin was not found again; the stream ended here");
                        self.registry.end_relay(&path);
                        return;
                    }
                    tracing::info!(stream = %path, why, retry_in = ?backoff, "lost the origin; looking for it again");
                }
                Outcome::Relayed(lasted) if lasted >= RELAY_OK => {
                    // It ran, then ended: look for the origin again soon.
                    lost_since = Some(Instant::now());
                    backoff = BACKOFF.0;
                }
                Outcome::Relayed(_) => {
                    // It ended at once (a track refused, nothing sent): a
                    // failure, which the grace bounds as any other.
                    let since = *lost_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.grace {
                        tracing::info!(stream = %path, "the origin's pulls keep failing; the stream ended here");
                        self.registry.end_relay(&path);
                        return;
                    }
                }
            }
            let mut stop = shutdown.clone();
            tokio::select! {
                _ = stop.wait() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// One relay: find the origin, describe, pull every track until one
    /// ends. Dropping the producer at the end interrupts the relay.
    async fn session(
        &self,
        path: &StreamPath,
        state: &watch::Sender<PullState>,
        mut shutdown: Shutdown,
        idle_since: &mut Instant,
    ) -> Outcome {
        let expiry = i64::try_from(self.config.expiry.as_millis()).unwrap_or(i64::MAX);
        let origin = match self
            .store
            .locate_stream(path.app(), path.stream(), expiry)
            .await
        {
            // Its publisher came here: the broadcast here is the stream.
            Ok(Some(o)) if o.node == self.node => return Outcome::Stop("it is published here now"),
            Ok(Some(o)) => o,
            Ok(None) => return Outcome::NotFound("no origin lists it"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster directory");
                return Outcome::NotFound("the directory cannot be read");
            }
        };
        let base = format!(
            "{}/cluster/v1/streams/{}/{}",
            origin.url.trim_end_matches('/'),
            path.app(),
            path.stream()
        );
        let info = match tokio::time::timeout(REQUEST_TIMEOUT, self.describe(&base)).await {
            Ok(Ok(info)) => info,
            Ok(Err(outcome)) => return outcome,
            Err(_) => return Outcome::Lost("the origin's description did not come in time"),
        };
        let mut producer = match self.registry.relay(path.clone()) {
            Ok(p) => p,
            Err(PublishError::ShuttingDown) => return Outcome::Stop("shutting down"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot relay the stream here");
                return Outcome::Stop("a publisher has it here");
            }
        };
        producer.set_meta(info.meta.meta());
        let mut tracks = Vec::new();
        for t in &info.tracks {
            tracks.push((t.name.clone(), producer.track(t.info())));
        }
        producer.consumer().publish_catalog(info.catalog.clone());
        tracing::info!(origin = %origin.node, session = info.session, tracks = tracks.len(), "relaying from the origin");
        let _ = state.send(PullState::Relaying);
        metrics::gauge!("streamd_cluster_pulls").increment(1.0);
        let relayed = Instant::now();
        let mut pulls = tokio::task::JoinSet::new();
        for (name, track) in tracks {
            let url = format!("{base}/tracks/{name}?session={}", info.session);
            let keyframe_url = format!("{base}/tracks/{name}/keyframe");
            let edge = self.clone();
            pulls.spawn(async move { edge.pull_track(url, keyframe_url, track).await });
        }
        let mut check = tokio::time::interval(Duration::from_secs(1));
        let outcome = loop {
            tokio::select! {
                _ = shutdown.wait() => break Outcome::Stop("shutting down"),
                _ = producer.ended() => break Outcome::Stop("the stream was ended here"),
                done = pulls.join_next() => {
                    let why = match done {
                        Some(Ok(why)) => why,
                        _ => "a track's pull failed",
                    };
                    break Outcome::Lost(why);
                }
                _ = check.tick() => {
                    // A viewer joining counts: the pull must not end
                    // between its offer and its answer.
                    if self.viewers.wanted(&path.to_string()) > 0 {
                        *idle_since = Instant::now();
                    } else if idle_since.elapsed() >= self.config.idle_timeout {
                        break Outcome::Stop("its last viewer left");
                    }
                }
            }
        };
        pulls.abort_all();
        metrics::gauge!("streamd_cluster_pulls").decrement(1.0);
        match outcome {
            Outcome::Lost(why) => {
                tracing::info!(why, "the pull from the origin ended");
                Outcome::Relayed(relayed.elapsed())
            }
            other => other,
        }
    }

    /// The stream's description from the origin at `base`, checked.
    async fn describe(&self, base: &str) -> Result<StreamInfo, Outcome> {
        let body = match self.get(base).await {
            Ok((200, body)) => body,
            Ok((404, _)) => return Err(Outcome::NotFound("the origin does not have it")),
            Ok((_, _)) => return Err(Outcome::Lost("the origin cannot describe it now")),
            Err(why) => return Err(Outcome::Lost(why)),
        };
        let bytes = http_body_util::Limited::new(body, MAX_DESCRIPTION)
            .collect()
            .await
            .map_err(|_| Outcome::Lost("the origin's description was cut or too long"))?
            .to_bytes();
        let info: StreamInfo = serde_json::from_slice(&bytes)
            .map_err(|_| Outcome::Lost("the origin's description is malformed"))?;
        info.check().map_err(|e| {
            tracing::warn!(error = %e, "the origin's description was refused");
            Outcome::Lost("the origin's description was refused")
        })?;
        Ok(info)
    }

    /// A GET to the origin, with the cluster secret, within
    /// [`REQUEST_TIMEOUT`] for its response's head.
    async fn get(&self, url: &str) -> Result<(u16, hyper::body::Incoming), &'static str> {
        let req = hyper::Request::get(url)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.config.secret),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|_| "a bad origin URL")?;
        match tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(r)) => Ok((r.status().as_u16(), r.into_body())),
            Ok(Err(_)) => Err("the origin cannot be reached"),
            Err(_) => Err("the origin did not answer"),
        }
    }

    /// Pulls one track onto `track` until the response ends or stalls;
    /// returns why it ended.
    async fn pull_track(
        self,
        url: String,
        keyframe_url: String,
        mut track: TrackProducer,
    ) -> &'static str {
        let mut body = match self.get(&url).await {
            Ok((200, body)) => body,
            Ok(_) => return "the origin refused a track's pull",
            Err(why) => return why,
        };
        let mut reader = TrackReader::default();
        let mut config: Option<Arc<crate::media::CodecConfig>> = None;
        let mut asked: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut last_data = Instant::now();
        loop {
            tokio::select! {
                chunk = body.frame() => {
                    let data = match chunk {
                        Some(Ok(f)) => match f.into_data() {
                            Ok(d) => d,
                            Err(_) => continue, // trailers
                        },
                        None => return "the origin ended the track",
                        Some(Err(_)) => return "the track's connection failed",
                    };
                    last_data = Instant::now();
                    metrics::counter!("streamd_cluster_pulled_bytes_total").increment(data.len() as u64);
                    reader.push(&data);
                    loop {
                        match reader.next_frame() {
                            Ok(Some(f)) => write(&mut track, &mut config, f),
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, track = %track.info().name, "the origin sent a malformed track");
                                return "the origin sent a malformed track";
                            }
                        }
                    }
                }
                _ = tick.tick() => {
                    if last_data.elapsed() >= READ_IDLE {
                        return "nothing arrived from the origin";
                    }
                    if track.keyframe_requested()
                        && asked.is_none_or(|t| t.elapsed() >= KEYFRAME_EVERY)
                    {
                        asked = Some(Instant::now());
                        let edge = self.clone();
                        let url = keyframe_url.clone();
                        tokio::spawn(async move { edge.request_keyframe(&url).await });
                    }
                }
            }
        }
    }

    async fn request_keyframe(&self, url: &str) {
        let req = hyper::Request::post(url)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.config.secret),
            )
            .body(Full::new(Bytes::new()));
        if let Ok(req) = req {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req)).await;
            metrics::counter!("streamd_cluster_keyframe_requests_sent_total").increment(1);
        }
    }
}

/// How one relay ended.
enum Outcome {
    /// The directory or the origin does not have it.
    NotFound(&'static str),
    /// The origin could not be reached or read.
    Lost(&'static str),
    /// It was relayed for this long, then the origin was lost.
    Relayed(Duration),
    /// Over: no viewers, shutdown, or ended here.
    Stop(&'static str),
}

/// Writes a pulled frame, starting a group where the origin's did; a
/// frame the bus refuses (a group not starting at a keyframe) is dropped.
fn write(
    track: &mut TrackProducer,
    config: &mut Option<Arc<crate::media::CodecConfig>>,
    f: PulledFrame,
) {
    if config.as_ref().is_none_or(|c| !Arc::ptr_eq(c, &f.config)) {
        track.set_config((*f.config).clone());
        *config = Some(f.config.clone());
    }
    let frame = Frame {
        dts: f.dts,
        pts: f.pts,
        keyframe: f.keyframe,
        data: f.data,
        wallclock: f.wallclock,
        received: Instant::now(),
    };
    let _ = track.write(frame, f.group_start);
}
