//! `streamd [--config FILE]`: wires the configuration, logging and signals to
//! [`streamd::server::Server`]. `streamd token` prints an API token signed
//! with the configured (or generated) secret; `streamd webhook-secret` the
//! key webhooks are signed with; `streamd config` the effective
//! configuration; `streamd check-config FILE` validates one.

use std::path::PathBuf;

use clap::Parser;
use streamd::config::{Config, LogFormat};
use streamd::server::Server;

/// jemalloc rather than glibc's malloc: a request allocates and frees many
/// small objects (headers, HTTP/2 stream state, TLS records). It took
/// 0.83-0.93x the user CPU per tiny HTTP/2 response, with the same CPU and
/// memory per WebRTC viewer at 1,000 viewers (benches/README.md). The
/// `system-alloc` feature keeps glibc's, for heaptrack.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(version, about = "A live media server: RTMP in, LL-HLS out.")]
struct Cli {
    /// A TOML configuration file (see config/streamd.toml). Without it,
    /// streamd runs on its built-in defaults.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print a JWT for the REST API (Authorization: Bearer ...), signed
    /// with JWT_SECRET, [auth] jwt_secret or the generated secret.
    Token {
        /// How long it is valid (e.g. 1h, 30d).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Who it is for (the `sub` claim).
        #[arg(long, default_value = "admin")]
        subject: String,
    },
    /// Print the key webhook signatures are made with (X-Streamd-Signature),
    /// for the receiver: `[webhooks] secret`, or the key derived from the
    /// JWT secret. It cannot mint tokens.
    WebhookSecret,
    /// Print the effective configuration (the file or the defaults, then
    /// the STREAMD_SECTION__KEY environment variables) as TOML, secrets
    /// redacted.
    Config,
    /// Validate a configuration file (with the environment applied, as at
    /// start) without starting: parse, ranges, the recording location and
    /// the TLS certificate. Exits 0 when streamd would start with it.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    // An error ends the process with its reason on one line (no
    // backtrace: RUST_BACKTRACE still adds one for a developer).
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
                eprintln!("streamd: {e:?}");
            } else {
                eprintln!("streamd: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file = match &cli.command {
        Some(Command::CheckConfig { file }) => Some(file.as_path()),
        _ => cli.config.as_deref(),
    };
    let config = Config::from_sources(file, std::env::vars())?;
    // Colours only on a terminal: logs that go to files or a container
    // runtime stay plain text. Subcommands log to stderr (`token` prints
    // the token alone on stdout).
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The MPEG-TS reader warns once per bad packet a publisher sends:
    // streamd reports those itself, rate-limited. Silenced unless RUST_LOG
    // names it.
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("mpeg2ts_reader")) {
        filter = filter.add_directive("mpeg2ts_reader=off".parse().expect("a valid directive"));
    }
    let subcommand = cli.command.is_some();
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (config.log.format, subcommand) {
        (_, true) => builder.with_writer(std::io::stderr).with_ansi(false).init(),
        (LogFormat::Json, false) => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        (LogFormat::Text, false) => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
    }
    match cli.command {
        Some(Command::Config) => {
            print!("{}", config.redacted_toml());
            return Ok(());
        }
        Some(Command::CheckConfig { file }) => {
            streamd::server::check(&config)?;
            println!("{}: ok", file.display());
            return Ok(());
        }
        Some(Command::Token { ttl, subject }) => {
            let secret = streamd::auth::secret(&config.auth, &config.database.data_dir)?;
            let auth = streamd::auth::Auth::new(&secret, config.auth.clone());
            println!("{}", auth.mint_api(&subject, ttl));
            return Ok(());
        }
        Some(Command::WebhookSecret) => {
            let secret = streamd::auth::secret(&config.auth, &config.database.data_dir)?;
            println!("{}", streamd::auth::webhook_key(&config.webhooks, &secret));
            return Ok(());
        }
        None => {}
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let mut signals = Signals::install();
        let (trigger, drain) = streamd::shutdown::channel();
        tokio::spawn(async move {
            signals.next().await;
            trigger.trigger();
            // A second signal: out at once, whatever is left.
            signals.next().await;
            tracing::warn!("second signal: exiting now, without finishing the drain");
            std::process::exit(1);
        });
        let server = Server::bind(config).await?;
        server.serve(drain).await
    })
}

/// SIGTERM or SIGINT, each time it arrives. Installed before anything
/// binds, so a signal during start-up drains instead of killing.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn next(&mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => {}
            _ = recv(&mut self.int) => {}
        }
    }
}
