//! The `conflux-operator` binary: `run` starts the controller with `/metrics` and `/healthz`;
//! `crd` prints the CustomResourceDefinition. Parsing and wiring only.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use clap::{Parser, Subcommand};
use conflux_operator::{
    controller::{self, Context},
    crd,
    metrics::Metrics,
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
    },
    /// Print the CustomResourceDefinitions (ConfluxCluster, ConfluxBackup) as YAML.
    Crd {
        /// Print only this one (`ConfluxCluster` or `ConfluxBackup`), as the chart's `crds/` holds them.
        #[arg(long, value_parser = ["ConfluxCluster", "ConfluxBackup"])]
        kind: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { kind } => {
            let yaml = crd::crd_yaml(kind.as_deref()).context("serializing the CRDs")?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), yaml.as_bytes()).context("writing the CRD")
        }
        Command::Run { listen, log_json } => {
            let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
            let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
            if log_json {
                subscriber.json().init();
            } else {
                subscriber.init();
            }
            run(listen).await
        }
    }
}

async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let metrics = Metrics::new().context("registering metrics")?;
    let context = Arc::new(Context::new(client, HttpNodeAdmin::new(), metrics.clone()));
    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(metrics);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "serving /metrics and /healthz");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    controller::run(context).await;
    server.abort();
    Ok(())
}

async fn serve_metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    match metrics.encode() {
        Ok(text) => (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], text).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
