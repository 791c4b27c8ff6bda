//! `rauha image pull|ls|inspect|rm|tag|prune`, and pulling on first use for
//! `--image` (`--pull always|missing|never`).
//!
//! Credentials come from `--username` + `--password-stdin`, or from the
//! user's docker-style `config.json` (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`); they are sent with the pull and rauhad keeps
//! them nowhere.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Read, Write};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use rauha_api::v1;
use rauha_api::v1::images_client::ImagesClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::connect::Connection;
use crate::json_view::print_json;
use crate::table::{size_cell, Table};
use crate::timestamp::format_utc;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Fetch an image from a registry into this node's store.
    Pull(PullArgs),
    /// List the node's images.
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show an image: its config, layers and the zones that use it (JSON).
    Inspect {
        /// A name, an id (a prefix of the digest) or a digest.
        image: String,
        /// Accepted for symmetry; inspect always prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove image names; an image whose last name goes is deleted (its
    /// content is freed by `rauha image prune`).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
        /// Remove even while zones use it (they keep its layers until
        /// they are deleted).
        #[arg(long, short)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Load images from an archive: an OCI layout in a tar (oci-archive) or
    /// a docker-archive (`docker save`), optionally gzip'd; `-` reads stdin.
    Import {
        file: String,
        /// The name to give the image (an archive holding one image);
        /// without it, the names the archive carries.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Write an image as an oci-archive (an OCI layout in a tar).
    Export {
        image: String,
        /// The file to write [default: stdout, when it is not a terminal].
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<String>,
    },
    /// Give an image another name.
    Tag {
        source: String,
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// Free the content (blobs and unpacked layers) no image or zone uses.
    Prune {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: [REGISTRY/]REPOSITORY[:TAG][@DIGEST] (docker.io by default).
    pub image: String,
    /// Log in as this user for this pull (the password from stdin).
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password from stdin.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Print only the image's name and digest.
    #[arg(long, short)]
    pub quiet: bool,
    #[arg(long)]
    pub json: bool,
}

/// When `--image` pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PullPolicy {
    /// Pull every time.
    Always,
    /// Pull when the node does not have the image.
    #[default]
    Missing,
    /// Never pull: the image must be stored.
    Never,
}

pub async fn run(command: ImageCommand, addr: &str) -> anyhow::Result<u8> {
    let password = match &command {
        ImageCommand::Pull(PullArgs {
            password_stdin: true,
            ..
        }) => Some(read_password(io::stdin().lock())?),
        _ => None,
    };
    let mut images = Connection::open(addr).await?.images();
    match command {
        ImageCommand::Pull(args) => {
            let credentials = match (args.username.clone(), password) {
                (Some(u), Some(p)) => Some((u, p)),
                _ => None,
            };
            let display = if args.quiet || args.json {
                Display::Silent
            } else {
                Display::for_stderr()
            };
            let image = pull(&mut images, &args.image, credentials, display).await?;
            if args.json {
                print_json(&ImageView::from(&image))?;
            } else {
                writeln!(io::stdout(), "{}@{}", image.name, image.digest)?;
            }
        }
        ImageCommand::Ls { json } => {
            let list = images
                .list(v1::ListImagesRequest {})
                .await?
                .into_inner()
                .images;
            if json {
                print_json(&list.iter().map(ImageView::from).collect::<Vec<_>>())?;
            } else {
                let mut table =
                    Table::new(&["NAME", "IMAGE ID", "PLATFORM", "SIZE", "PULLED", "ZONES"]);
                for i in &list {
                    table.row([
                        i.name.clone(),
                        i.id.clone(),
                        i.platform.clone(),
                        size_cell(i.size),
                        format_utc(i.created_ms),
                        if i.zones.is_empty() {
                            "-".to_string()
                        } else {
                            i.zones.join(",")
                        },
                    ]);
                }
                table.write_to(&mut io::stdout().lock())?;
            }
        }
        ImageCommand::Inspect { image, .. } => {
            let i = images.inspect(v1::ImageName { image }).await?.into_inner();
            print_json(&ImageView::from(&i))?;
        }
        ImageCommand::Rm {
            images: names,
            force,
            json,
        } => {
            let mut out = Vec::new();
            for image in names {
                let r = images
                    .remove(v1::RemoveImageRequest { image, force })
                    .await?
                    .into_inner();
                if !json {
                    let mut stdout = io::stdout().lock();
                    for u in &r.untagged {
                        writeln!(stdout, "untagged: {u}")?;
                    }
                    if !r.deleted.is_empty() {
                        writeln!(stdout, "deleted: {}", r.deleted)?;
                    }
                }
                out.push(serde_json::json!({"untagged": r.untagged, "deleted": (!r.deleted.is_empty()).then_some(r.deleted)}));
            }
            if json {
                print_json(&out)?;
            }
        }
        ImageCommand::Import { file, name, json } => {
            let reader: Box<dyn Read + Send> = if file == "-" {
                Box::new(io::stdin())
            } else {
                Box::new(std::fs::File::open(&file).with_context(|| format!("cannot open {file}"))?)
            };
            let (tx, rx) = tokio::sync::mpsc::channel::<v1::ImportChunk>(8);
            let reading = std::thread::spawn(move || -> io::Result<()> {
                let mut reader = reader;
                let mut first = Some(name.unwrap_or_default());
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = reader.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    let chunk = v1::ImportChunk {
                        data: buf[..n].to_vec(),
                        name: first.take().unwrap_or_default(),
                    };
                    if tx.blocking_send(chunk).is_err() {
                        return Ok(());
                    }
                }
            });
            let answer = images
                .import(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await;
            reading
                .join()
                .map_err(|_| anyhow::anyhow!("reading {file} failed"))?
                .with_context(|| format!("cannot read {file}"))?;
            let imported = answer?.into_inner().images;
            if json {
                print_json(&imported.iter().map(ImageView::from).collect::<Vec<_>>())?;
            } else {
                for i in &imported {
                    writeln!(io::stdout(), "{}@{}", i.name, i.digest)?;
                }
            }
        }
        ImageCommand::Export { image, output } => {
            let mut out: Box<dyn Write> = match &output {
                Some(path) if path != "-" => Box::new(io::BufWriter::new(
                    std::fs::File::create(path).with_context(|| format!("cannot create {path}"))?,
                )),
                _ if io::stdout().is_terminal() => bail!(
                    "an image archive is binary: write it to a file with -o FILE, or redirect stdout"
                ),
                _ => Box::new(io::stdout().lock()),
            };
            let written = async {
                let mut stream = images.export(v1::ImageName { image }).await?.into_inner();
                while let Some(chunk) = stream.message().await? {
                    out.write_all(&chunk.data)?;
                }
                out.flush()?;
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = written {
                // No half archive left under the name asked for.
                if let Some(path) = output.as_deref().filter(|p| *p != "-") {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
        }
        ImageCommand::Tag {
            source,
            target,
            json,
        } => {
            let i = images
                .tag(v1::TagImageRequest { source, target })
                .await?
                .into_inner();
            if json {
                print_json(&ImageView::from(&i))?;
            } else {
                writeln!(io::stdout(), "{}@{}", i.name, i.digest)?;
            }
        }
        ImageCommand::Prune { json } => {
            let r = images.prune(v1::PruneImagesRequest {}).await?.into_inner();
            if json {
                print_json(
                    &serde_json::json!({"freed_bytes": r.freed_bytes, "blobs": r.blobs, "snapshots": r.snapshots}),
                )?;
            } else {
                writeln!(
                    io::stdout(),
                    "freed {} ({} blobs, {} unpacked layers)",
                    size_cell(r.freed_bytes).replace('-', "0 bytes"),
                    r.blobs,
                    r.snapshots
                )?;
            }
        }
    }
    Ok(0)
}

/// Makes sure `image` is stored, as `policy` says; progress on stderr.
pub async fn ensure(conn: &Connection, image: &str, policy: PullPolicy) -> anyhow::Result<()> {
    let mut images = conn.images();
    if policy == PullPolicy::Missing {
        match images
            .inspect(v1::ImageName {
                image: image.to_string(),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(s.into()),
        }
    }
    if policy == PullPolicy::Never {
        return Ok(());
    }
    pull(&mut images, image, None, Display::for_stderr()).await?;
    Ok(())
}

/// The password from stdin, without its final newline.
fn read_password(mut input: impl Read) -> anyhow::Result<String> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .context("cannot read the password from stdin")?;
    let p = text.strip_suffix('\n').unwrap_or(&text);
    let p = p.strip_suffix('\r').unwrap_or(p);
    if p.is_empty() {
        bail!("--password-stdin: stdin is empty; pipe the password in, e.g. `cat token | rauha image pull --username U --password-stdin IMAGE`");
    }
    Ok(p.to_string())
}

/// Credentials for `registry` from a docker-style config.json, if any.
fn docker_config_credentials(registry: &str) -> Option<(String, String)> {
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => std::path::PathBuf::from(dir).join("config.json"),
        None => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json"),
    };
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let keys: Vec<String> = if registry == "docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ]
    } else {
        vec![
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
        ]
    };
    let entry = keys.iter().find_map(|k| auths.get(k.as_str()))?;
    let auth = entry.get("auth")?.as_str()?;
    let decoded = String::from_utf8(base64_decode(auth)?).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The registry part of a reference, as docker's config.json keys it.
fn registry_of(image: &str) -> String {
    let first = image.split('/').next().unwrap_or("");
    if image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
        first.to_string()
    } else {
        "docker.io".to_string()
    }
}

#[derive(Clone, Copy)]
enum Display {
    Silent,
    Lines,
    Bars,
}

impl Display {
    fn for_stderr() -> Display {
        if io::stderr().is_terminal() {
            Display::Bars
        } else {
            Display::Lines
        }
    }
}

/// Pulls, showing progress; the image as stored.
async fn pull(
    images: &mut ImagesClient<Channel>,
    image: &str,
    credentials: Option<(String, String)>,
    display: Display,
) -> anyhow::Result<v1::Image> {
    let (username, password) = credentials
        .or_else(|| docker_config_credentials(&registry_of(image)))
        .unwrap_or_default();
    let mut stream = images
        .pull(v1::PullImageRequest {
            reference: image.to_string(),
            username,
            password,
        })
        .await?
        .into_inner();
    let mut progress = PullProgress::new(display);
    while let Some(event) = stream.message().await? {
        match event.event {
            Some(v1::pull_event::Event::Resolved(r)) => progress.resolved(image, &r),
            Some(v1::pull_event::Event::Layer(l)) => progress.layer(&l),
            Some(v1::pull_event::Event::Done(i)) => {
                progress.done(&i);
                return Ok(i);
            }
            None => {}
        }
    }
    bail!("rauhad ended the pull of {image} without a result; see rauhad's log")
}

struct LayerState {
    state: String,
    done: u64,
    total: u64,
}

struct PullProgress {
    display: Display,
    order: Vec<String>,
    layers: BTreeMap<String, LayerState>,
    started: Instant,
    drawn: usize,
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

impl PullProgress {
    fn new(display: Display) -> PullProgress {
        PullProgress {
            display,
            order: Vec::new(),
            layers: BTreeMap::new(),
            started: Instant::now(),
            drawn: 0,
        }
    }

    fn resolved(&mut self, image: &str, r: &v1::PullResolved) {
        for l in &r.layers {
            self.order.push(l.digest.clone());
            self.layers.insert(
                l.digest.clone(),
                LayerState {
                    state: "waiting".into(),
                    done: 0,
                    total: l.size,
                },
            );
        }
        if let Display::Lines = self.display {
            let _ = writeln!(
                io::stderr(),
                "{image}: {} ({} layers)",
                r.digest,
                r.layers.len()
            );
        }
        self.draw();
    }

    fn layer(&mut self, l: &v1::LayerProgress) {
        let Some(s) = self.layers.get_mut(&l.digest) else {
            return;
        };
        s.state = l.state.clone();
        if l.state == "fetching" {
            s.done = l.done;
        } else if l.state == "stored" || l.state == "cached" {
            s.done = s.total;
        }
        if let Display::Lines = self.display {
            if l.state != "fetching" {
                let _ = writeln!(io::stderr(), "{}: {}", short(&l.digest), l.state);
            }
        }
        self.draw();
    }

    fn done(&mut self, i: &v1::Image) {
        match self.display {
            Display::Silent => {}
            Display::Lines | Display::Bars => {
                self.draw();
                let _ = writeln!(
                    io::stderr(),
                    "pulled {} ({}) in {:.1}s",
                    i.name,
                    size_cell(i.size),
                    self.started.elapsed().as_secs_f64()
                );
            }
        }
    }

    /// Redraws one line per layer (a terminal only).
    fn draw(&mut self) {
        let Display::Bars = self.display else { return };
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let mut out = String::new();
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn));
        }
        for d in &self.order {
            let s = &self.layers[d];
            let width = 24;
            let filled = (s.done.min(s.total) * width)
                .checked_div(s.total)
                .unwrap_or(0) as usize;
            let bar = format!(
                "{}{}",
                "=".repeat(filled),
                " ".repeat(width as usize - filled)
            );
            let speed = if s.state == "fetching" {
                format!("  {}/s", size_cell((s.done as f64 / secs) as u64))
            } else {
                String::new()
            };
            out.push_str(&format!(
                "\x1b[2K{}  [{bar}] {:>9} / {:<9} {}{speed}\n",
                short(d),
                size_cell(s.done),
                size_cell(s.total),
                s.state
            ));
        }
        self.drawn = self.order.len();
        let _ = io::stderr().write_all(out.as_bytes());
    }
}

/// An image as `--json` shows it.
#[derive(Serialize)]
struct ImageView {
    name: String,
    id: String,
    digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    index_digest: Option<String>,
    config_digest: String,
    platform: String,
    size: u64,
    pulled_ms: u64,
    config: ConfigView,
    layers: Vec<LayerView>,
    zones: Vec<String>,
}

#[derive(Serialize)]
struct ConfigView {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    working_dir: String,
    user: String,
    exposed_ports: Vec<String>,
    labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct LayerView {
    digest: String,
    media_type: String,
    size: u64,
}

impl From<&v1::Image> for ImageView {
    fn from(i: &v1::Image) -> Self {
        let c = i.config.clone().unwrap_or_default();
        ImageView {
            name: i.name.clone(),
            id: i.id.clone(),
            digest: i.digest.clone(),
            index_digest: (!i.index_digest.is_empty()).then(|| i.index_digest.clone()),
            config_digest: i.config_digest.clone(),
            platform: i.platform.clone(),
            size: i.size,
            pulled_ms: i.created_ms,
            config: ConfigView {
                entrypoint: c.entrypoint,
                cmd: c.cmd,
                env: c.env,
                working_dir: c.working_dir,
                user: c.user,
                exposed_ports: c.exposed_ports,
                labels: c.labels.into_iter().collect(),
            },
            layers: i
                .layers
                .iter()
                .map(|l| LayerView {
                    digest: l.digest.clone(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                })
                .collect(),
            zones: i.zones.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_found_as_docker_finds_them() {
        assert_eq!(registry_of("alpine"), "docker.io");
        assert_eq!(registry_of("library/alpine:3"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/bb:1"), "127.0.0.1:5000");
        assert_eq!(registry_of("quay.io/x/y"), "quay.io");
        assert_eq!(registry_of("localhost/x"), "localhost");
    }

    #[test]
    fn config_json_auth_decodes() {
        assert_eq!(
            base64_decode("dXNlcjpwYXNz").as_deref(),
            Some(&b"user:pass"[..])
        );
        assert_eq!(base64_decode("YQ==").as_deref(), Some(&b"a"[..]));
        assert_eq!(base64_decode("!"), None);
    }

    #[test]
    fn the_password_loses_one_final_newline() {
        assert_eq!(read_password(&b"s3cret\n"[..]).expect("pw"), "s3cret");
        assert!(read_password(&b"\n"[..]).is_err());
    }
}
