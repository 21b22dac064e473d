//! The I/O half: the ADS gRPC service, one task per stream driving an
//! [`AdsStream`], and the task that follows the registry and publishes a
//! new [`Snapshot`] after every change that alters a resource.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::ads::{AdsStream, Event};
use super::delta::DeltaStream;
use super::snapshot::{Builder, ResourceType, Snapshot, SubsetName};
use super::{Error, XdsMetrics, XdsStatus};
use crate::registry::Registry;

/// A snapshot as published to the streams, with when the registry change
/// it reflects was seen (for the push delay).
#[derive(Debug, Default)]
struct Published {
    snapshot: Snapshot,
    seen: Option<Instant>,
    /// The services (`<service>.<namespace>`) whose resources this snapshot
    /// changed, added or removed.
    changed: BTreeSet<String>,
}

/// Most subsets clients may ask for by name (they are kept until restart).
const MAX_DEMANDED_SUBSETS: usize = 1024;

/// The subsets clients asked for by name, shared by the streams (which add
/// to it) and the follower (which builds their resources).
#[derive(Debug, Default)]
struct Demand {
    names: Mutex<BTreeSet<SubsetName>>,
    changed: Notify,
}

impl Demand {
    /// Records the subset names among `names` that `snapshot` does not serve
    /// for `kind` (of services it does serve), and wakes the follower when
    /// one is new.
    fn ask<'a>(
        &self,
        kind: ResourceType,
        names: impl Iterator<Item = &'a str>,
        snapshot: &Snapshot,
    ) {
        let served = snapshot.resources(kind);
        let mut added = false;
        let mut known = self.names.lock().unwrap_or_else(|e| e.into_inner());
        for name in names.filter(|n| n.contains('/') && !served.contains_key(*n)) {
            let Some(subset) = SubsetName::parse(name) else {
                continue;
            };
            // Only subsets of services that exist take a place, so made-up
            // names cannot use up the limit.
            let exists = snapshot
                .resources(ResourceType::Listener)
                .contains_key(&subset.base);
            if !exists || known.contains(&subset) {
                continue;
            }
            if known.len() >= MAX_DEMANDED_SUBSETS {
                warn!(%name, limit = MAX_DEMANDED_SUBSETS, "xDS subset not served: too many subsets asked for");
                continue;
            }
            known.insert(subset);
            added = true;
        }
        drop(known);
        if added {
            self.changed.notify_one();
        }
    }

    fn snapshot(&self) -> BTreeSet<SubsetName> {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Binds the xDS listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Serves ADS on `listener` from `registry` until `shutdown` resolves,
/// recording what clients reject in `status`.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    metrics: XdsMetrics,
    status: XdsStatus,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (tx, rx) = watch::channel(Arc::new(Published::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let demand = Arc::new(Demand::default());
    let follower = tokio::spawn(follow(
        registry,
        tx,
        metrics.clone(),
        demand.clone(),
        stop_rx.clone(),
    ));
    let service = Ads {
        snapshots: rx,
        metrics,
        demand,
        status,
        stop: stop_rx,
    };
    let incoming = TcpListenerStream::new(listener);
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Dead peers are noticed and their streams freed.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(AggregatedDiscoveryServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            // Streams never end by themselves: end them, so the graceful
            // shutdown does not wait for clients to hang up.
            let _ = stop_tx.send(true);
        })
        .await;
    follower.abort();
    result.map_err(Error::from)
}

/// Follows the registry: after each commit, rebuilds the snapshot (only the
/// changed services) and publishes it when any resource changed.
async fn follow(
    registry: Arc<Registry>,
    tx: watch::Sender<Arc<Published>>,
    metrics: XdsMetrics,
    demand: Arc<Demand>,
    mut stop: watch::Receiver<bool>,
) {
    let mut generations = registry.subscribe();
    let mut builder = Builder::default();
    loop {
        generations.mark_unchanged();
        let seen = Instant::now();
        // Building encodes protobufs: keep it off the async workers.
        let reg = registry.clone();
        let demanded = demand.snapshot();
        let built = tokio::task::spawn_blocking(move || {
            let out = builder.build(&reg.read(), &demanded);
            (builder, out)
        })
        .await;
        let Ok((b, (snapshot, stats))) = built else {
            warn!("xDS snapshot build panicked; xDS stops following the registry");
            return;
        };
        builder = b;
        metrics.rebuilt.inc_by(stats.rebuilt as u64);
        for (service, problem) in &stats.problems {
            warn!(%service, %problem, "traffic split ignored: the whole service is routed to");
        }
        let changed_services = {
            let current = tx.borrow();
            changed_services(&current.snapshot, &snapshot)
        };
        if !changed_services.is_empty() {
            for kind in ResourceType::ALL {
                metrics.set_resources(kind, snapshot.resources(kind).len());
            }
            debug!(
                services = stats.services,
                rebuilt = stats.rebuilt,
                "xDS snapshot published"
            );
            tx.send_replace(Arc::new(Published {
                snapshot,
                seen: Some(seen),
                changed: changed_services,
            }));
        }
        tokio::select! {
            res = generations.changed() => if res.is_err() { return },
            () = demand.changed.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The services whose resources differ between two snapshots (by name and
/// version, of every type).
fn changed_services(before: &Snapshot, after: &Snapshot) -> BTreeSet<String> {
    let mut changed = BTreeSet::new();
    for kind in ResourceType::ALL {
        let (a, b) = (before.resources(kind), after.resources(kind));
        for (name, r) in a {
            if b.get(name).is_none_or(|r2| r2.version != r.version) {
                changed.insert(super::status::service_of(name).to_string());
            }
        }
        for name in b.keys().filter(|n| !a.contains_key(*n)) {
            changed.insert(super::status::service_of(name).to_string());
        }
    }
    changed
}

/// The ADS service: what every stream shares.
#[derive(Clone)]
struct Ads {
    snapshots: watch::Receiver<Arc<Published>>,
    metrics: XdsMetrics,
    demand: Arc<Demand>,
    status: XdsStatus,
    stop: watch::Receiver<bool>,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Counts a stream as connected while it lives.
struct Connected(XdsMetrics);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.clients.dec();
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        // A few responses may queue (one per type); a slow client then
        // holds back its own stream only.
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(run_stream::<AdsStream>(inbound, tx, self.clone(), peer));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(run_stream::<DeltaStream>(inbound, tx, self.clone(), peer));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// One stream's protocol state: state of the world or delta.
trait Protocol: Default + Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    /// The client's node id, when the request names it.
    fn node(request: &Self::Request) -> Option<&str>;
    /// The request's type URL and the resource names it subscribes to.
    fn subscribes(request: &Self::Request) -> (&str, Vec<&str>);
    /// Handles a request: what it meant and the response it calls for.
    fn handle(
        &mut self,
        request: &Self::Request,
        snapshot: &Snapshot,
    ) -> (Event, Option<Self::Response>);
    /// The responses a new snapshot calls for.
    fn push(&mut self, snapshot: &Snapshot) -> Vec<Self::Response>;
    /// Every resource name the stream subscribes to.
    fn subscribed(&self) -> Vec<&str>;
    /// A response's type URL.
    fn type_url(response: &Self::Response) -> &str;
}

impl Protocol for AdsStream {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    fn node(request: &DiscoveryRequest) -> Option<&str> {
        request.node.as_ref().map(|n| n.id.as_str())
    }
    fn subscribes(request: &DiscoveryRequest) -> (&str, Vec<&str>) {
        let names = request.resource_names.iter().map(String::as_str).collect();
        (&request.type_url, names)
    }
    fn handle(
        &mut self,
        request: &DiscoveryRequest,
        snapshot: &Snapshot,
    ) -> (Event, Option<DiscoveryResponse>) {
        let h = AdsStream::handle(self, request, snapshot);
        (h.event, h.response)
    }
    fn push(&mut self, snapshot: &Snapshot) -> Vec<DiscoveryResponse> {
        AdsStream::push(self, snapshot)
    }
    fn subscribed(&self) -> Vec<&str> {
        self.subscribed_names().collect()
    }
    fn type_url(response: &DiscoveryResponse) -> &str {
        &response.type_url
    }
}

impl Protocol for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    fn node(request: &DeltaDiscoveryRequest) -> Option<&str> {
        request.node.as_ref().map(|n| n.id.as_str())
    }
    fn subscribes(request: &DeltaDiscoveryRequest) -> (&str, Vec<&str>) {
        let names = request
            .resource_names_subscribe
            .iter()
            .map(String::as_str)
            .collect();
        (&request.type_url, names)
    }
    fn handle(
        &mut self,
        request: &DeltaDiscoveryRequest,
        snapshot: &Snapshot,
    ) -> (Event, Option<DeltaDiscoveryResponse>) {
        let h = DeltaStream::handle(self, request, snapshot);
        (h.event, h.response)
    }
    fn push(&mut self, snapshot: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        DeltaStream::push(self, snapshot)
    }
    fn subscribed(&self) -> Vec<&str> {
        self.subscribed_names().collect()
    }
    fn type_url(response: &DeltaDiscoveryResponse) -> &str {
        &response.type_url
    }
}

/// Ends a stream's subscriptions in the status when the stream ends, however
/// it ends.
struct Subscribed(XdsStatus, u64);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.ended(self.1);
    }
}

/// Drives one stream: requests and snapshot changes in, responses out.
async fn run_stream<P: Protocol>(
    mut inbound: Streaming<P::Request>,
    tx: mpsc::Sender<Result<P::Response, Status>>,
    shared: Ads,
    peer: Option<SocketAddr>,
) {
    let Ads {
        mut snapshots,
        metrics,
        demand,
        status,
        mut stop,
    } = shared;
    metrics.clients.inc();
    let _connected = Connected(metrics.clone());
    // Counted as a client of the services it subscribes to until it closes.
    let id = status.stream();
    let _subscribed = Subscribed(status.clone(), id);
    let mut state = P::default();
    let mut node = String::new();
    let peer = peer.map(|p| p.to_string()).unwrap_or_default();
    loop {
        // The snapshot a push below sends, for the per-service push delay.
        let mut pushed: Option<Arc<Published>> = None;
        let responses = tokio::select! {
            msg = inbound.message() => {
                let request = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(status) => {
                        debug!(%peer, %node, %status, "xDS stream ended");
                        break;
                    }
                };
                if let Some(id) = P::node(&request) && node.is_empty() {
                    node = id.to_string();
                    info!(%peer, %node, "xDS client connected");
                }
                let published = snapshots.borrow_and_update().clone();
                let (event, response) = state.handle(&request, &published.snapshot);
                status.subscribes(id, state.subscribed());
                // Subsets asked for by name are built by the follower; the
                // next snapshot then carries them to this stream.
                let (type_url, names) = P::subscribes(&request);
                if let Some(kind) = ResourceType::from_url(type_url) {
                    demand.ask(kind, names.into_iter(), &published.snapshot);
                }
                match &event {
                    Event::Nack(nack) => {
                        metrics.nacked(nack.kind);
                        status.record(nack, &node, crate::registry::now_millis());
                        warn!(
                            %peer, %node,
                            r#type = nack.kind.label(),
                            rejected_version = %nack.rejected_version,
                            kept_version = %nack.kept_version,
                            code = nack.code,
                            error = %nack.message,
                            "xDS client rejected a response (NACK); it keeps its last good configuration"
                        );
                    }
                    Event::UnknownType(url) => {
                        debug!(%peer, %node, type_url = %url, "xDS request for a type Waymark does not serve");
                    }
                    event => debug!(%peer, %node, ?event, "xDS request"),
                }
                response.into_iter().map(|r| (r, None)).collect::<Vec<_>>()
            }
            res = snapshots.changed() => {
                if res.is_err() {
                    break;
                }
                let published = snapshots.borrow_and_update().clone();
                let responses: Vec<_> = state
                    .push(&published.snapshot)
                    .into_iter()
                    .map(|r| (r, published.seen))
                    .collect();
                pushed = Some(published);
                responses
            }
            _ = stop.wait_for(|s| *s) => break,
        };
        for (response, seen) in responses {
            if let Some(kind) = ResourceType::from_url(P::type_url(&response)) {
                metrics.pushed(kind);
            }
            if tx.send(Ok(response)).await.is_err() {
                return;
            }
            if let Some(seen) = seen {
                metrics.push_delay.observe(seen.elapsed().as_secs_f64());
            }
        }
        if let Some(published) = pushed
            && let Some(seen) = published.seen
        {
            let delay = seen.elapsed();
            let now = crate::registry::now_millis();
            for name in state.subscribed() {
                let service = super::status::service_of(name);
                if published.changed.contains(service) {
                    status.pushed(service, delay, now);
                }
            }
        }
    }
    debug!(%peer, %node, "xDS client disconnected");
}
