//! `streamd [--config FILE]`: wires the configuration, logging and signals to
//! [`streamd::server::Server`].

use std::path::PathBuf;

use clap::Parser;
use streamd::config::Config;
use streamd::server::Server;

#[derive(Parser)]
#[command(version, about = "A live media server: RTMP in, LL-HLS out.")]
struct Cli {
    /// A TOML configuration file (see config/streamd.toml). Without it,
    /// streamd runs on its built-in defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    // Colours only on a terminal: logs that go to files or a container
    // runtime stay plain text.
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        let (trigger, shutdown) = streamd::shutdown::channel();
        tokio::spawn(async move {
            wait_for_signal().await;
            trigger.trigger();
            // Keep the trigger alive: dropping it would also fire.
            std::future::pending::<()>().await;
        });
        server.run(shutdown).await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
