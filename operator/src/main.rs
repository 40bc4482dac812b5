//! The `conflux-operator` binary: `run` starts the controller with `/metrics` and `/healthz`;
//! `crd` prints the CustomResourceDefinition. Parsing and wiring only.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use clap::{Parser, Subcommand};
use conflux_operator::{
    controller::{self, Context, DEFAULT_OPERATOR_NAMESPACE, DEFAULT_OPERATOR_POD_LABELS},
    crd,
    leader::{Elector, LeaseConfig},
    metrics::Metrics,
    network_policy::OperatorPeers,
    nodes::HttpNodeAdmin,
};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "conflux-operator", version, about = "Kubernetes operator for Conflux clusters")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller, serving /metrics and /healthz.
    Run {
        /// Address of the /metrics and /healthz listener.
        #[arg(long, env = "CONFLUX_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// Log as JSON lines instead of text.
        #[arg(long, env = "CONFLUX_OPERATOR_LOG_JSON")]
        log_json: bool,
        #[command(flatten)]
        election: Election,
        /// Namespaces to watch, comma-separated; empty: all namespaces.
        #[arg(long, env = "CONFLUX_OPERATOR_WATCH_NAMESPACES", value_delimiter = ',', default_value = "")]
        watch_namespaces: Vec<String>,
        /// The operator's own namespace: clusters' NetworkPolicies admit its pods to the peer port.
        #[arg(long, env = "CONFLUX_OPERATOR_NAMESPACE", default_value = DEFAULT_OPERATOR_NAMESPACE)]
        operator_namespace: String,
        /// The operator pods' labels (`key=value,...`), for the same NetworkPolicies.
        #[arg(long, env = "CONFLUX_OPERATOR_POD_LABELS", default_value = DEFAULT_OPERATOR_POD_LABELS)]
        operator_pod_labels: String,
    },
    /// Print the CustomResourceDefinitions (ConfluxCluster, ConfluxBackup) as YAML.
    Crd {
        /// Print only this one (`ConfluxCluster` or `ConfluxBackup`), as the chart's `crds/` holds them.
        #[arg(long, value_parser = ["ConfluxCluster", "ConfluxBackup"])]
        kind: Option<String>,
    },
}

/// Leader election among operator replicas (see `leader.rs`).
#[derive(clap::Args)]
struct Election {
    /// Reconcile only while holding the Lease; `false` for a single replica run by hand.
    #[arg(long, env = "CONFLUX_OPERATOR_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the `coordination.k8s.io/v1` Lease the replicas compete for.
    #[arg(long, env = "CONFLUX_OPERATOR_LEASE_NAME", default_value = "conflux-operator")]
    lease_name: String,
    /// Namespace of the Lease: the operator's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease: its pod name.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { kind } => {
            let yaml = crd::crd_yaml(kind.as_deref()).context("serializing the CRDs")?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), yaml.as_bytes()).context("writing the CRD")
        }
        Command::Run { listen, log_json, election, watch_namespaces, operator_namespace, operator_pod_labels } => {
            let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
            let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
            if log_json {
                subscriber.json().init();
            } else {
                subscriber.init();
            }
            let operator = OperatorPeers::new(operator_namespace, &operator_pod_labels).map_err(anyhow::Error::msg)?;
            let namespaces = watch_namespaces.into_iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
            run(listen, election, namespaces.collect(), operator).await
        }
    }
}

async fn run(
    listen: SocketAddr,
    election: Election,
    namespaces: Vec<String>,
    operator: OperatorPeers,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let metrics = Metrics::new().context("registering metrics")?;
    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(metrics.clone());
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "serving /metrics and /healthz");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let context = Arc::new(Context { operator, ..Context::new(client.clone(), HttpNodeAdmin::new(), metrics.clone()) });
    tracing::info!(?namespaces, "watching (empty: all namespaces)");
    if !election.leader_elect {
        metrics.set_leader(true);
        controller::run(context, namespaces).await;
        server.abort();
        return Ok(());
    }
    let identity = election.identity.unwrap_or_else(|| format!("conflux-operator-{}", std::process::id()));
    let elector = Elector::new(client, LeaseConfig::new(&election.lease_name, &election.lease_namespace, &identity));
    tracing::info!(lease = %election.lease_name, %identity, "waiting to lead");
    elector.acquire().await;
    metrics.set_leader(true);
    tracing::info!(lease = %election.lease_name, %identity, "leading: reconciling");
    let outcome = tokio::select! {
        () = controller::run(context, namespaces) => Ok(()),
        reason = elector.keep() => Err(anyhow::anyhow!("stopped leading: {reason}")),
    };
    metrics.set_leader(false);
    if outcome.is_ok() {
        // A clean shutdown hands the Lease over at once instead of after its duration.
        if let Err(error) = elector.release().await {
            tracing::warn!(%error, "releasing the lease failed; a follower takes over when it expires");
        }
    }
    server.abort();
    // Losing the Lease ends the process (non-zero): Kubernetes restarts it as a follower.
    outcome
}

async fn serve_metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    match metrics.encode() {
        Ok(text) => (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], text).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
