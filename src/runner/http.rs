//! The runner's HTTP endpoints on `--metrics-addr`: the leaderboard page at `/`, its JSON at
//! `/api/leaderboard`, Prometheus metrics at `/metrics` and health at `/healthz`.
//!
//! A deliberately small HTTP/1.1 server: GET only, one request per connection, the request
//! head read through a limit and a deadline, so that nothing a client sends can hold memory
//! or a task for long. Everything the page needs is in the response itself. It is kept over
//! hyper because what it must guarantee is not parsing but scheduling, which hyper leaves to
//! its caller: the tests of `tests/runner/observe.rs` (malformed requests, slow clients,
//! clients of a huge page) hold it to the same rules a hyper server would have to meet.
//!
//! Every phase is bounded: a connection has `REQUEST_DEADLINE` to send its request and
//! `ANSWER_DEADLINE` to take the answer. The page and its JSON come from the monitor's
//! cache (rendered once per journal change, on a blocking thread), and at most `PAGES_MAX`
//! are sent at once, so clients of a huge page cannot starve the loop. Health never waits
//! behind them, and when every connection slot is held (slow clients) a probe still gets a
//! short reserved chance to be answered.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::monitor::Monitor;

/// The longest request head read.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

/// How long a client has to send its whole request head.
const REQUEST_DEADLINE: Duration = Duration::from_secs(3);

/// How long a client of an overflow slot has to send its request (a probe sends at once).
const PROBE_DEADLINE: Duration = Duration::from_millis(500);

/// How long a client has to take its answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// Connections served at once; more go to the overflow slots, then are closed, so a flood of
/// clients cannot take the process's file descriptors (the journal and the evaluation child
/// need them).
const CONNECTIONS_MAX: usize = 48;

/// Connections past [`CONNECTIONS_MAX`] given [`PROBE_DEADLINE`] to ask for `/healthz` (only
/// health is answered there), so slow clients holding every slot do not hide the validator's
/// health.
const OVERFLOW_MAX: usize = 16;

/// Page and JSON answers sent at once; more wait [`PAGE_WAIT`], then get 503.
const PAGES_MAX: usize = 4;

/// How long a page request waits for a page slot.
const PAGE_WAIT: Duration = Duration::from_secs(5);

/// The server's slots.
struct Slots {
    connections: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
    pages: Arc<Semaphore>,
}

/// Serves `monitor` on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, monitor: Arc<Monitor>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Slots {
        connections: Arc::new(Semaphore::new(CONNECTIONS_MAX)),
        overflow: Arc::new(Semaphore::new(OVERFLOW_MAX)),
        pages: Arc::new(Semaphore::new(PAGES_MAX)),
    });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        if *stop.borrow() {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                let (slot, probes_only) = match slots.connections.clone().try_acquire_owned() {
                    Ok(slot) => (slot, false),
                    Err(_) => match slots.overflow.clone().try_acquire_owned() {
                        Ok(slot) => (slot, true),
                        Err(_) => {
                            drop(stream);
                            continue;
                        }
                    },
                };
                let monitor = monitor.clone();
                let slots = slots.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let _ = answer(stream, &monitor, &slots, probes_only).await;
                });
            }
            Err(error) => {
                tracing::warn!("the HTTP endpoint could not accept a connection: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A response: status line, content type, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: Arc<[u8]>,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes().into(),
        }
    }
}

async fn answer(
    mut stream: TcpStream,
    monitor: &Arc<Monitor>,
    slots: &Slots,
    probes_only: bool,
) -> std::io::Result<()> {
    let deadline = if probes_only {
        PROBE_DEADLINE
    } else {
        REQUEST_DEADLINE
    };
    let head = tokio::time::timeout(deadline, read_head(&mut stream)).await;
    let (response, head_only) = match head {
        Ok(Ok(Some(head))) => route(&head, monitor, slots, probes_only).await,
        Ok(Ok(None)) => (Response::text("400 Bad Request", "bad request\n"), false),
        Ok(Err(error)) => return Err(error),
        Err(_) => (
            Response::text("408 Request Timeout", "request timeout\n"),
            false,
        ),
    };
    let header = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; connect-src 'self'\r\n\
         Allow: GET, HEAD\r\n{}Connection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len(),
        if response.status.starts_with("503") {
            "Retry-After: 1\r\n"
        } else {
            ""
        }
    );
    let send = async {
        stream.write_all(header.as_bytes()).await?;
        if !head_only {
            stream.write_all(&response.body).await?;
        }
        stream.shutdown().await
    };
    match tokio::time::timeout(ANSWER_DEADLINE, send).await {
        Ok(sent) => sent,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// The request line and headers, up to the blank line; `None` when it is too long or not
/// HTTP.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&chunk[..read]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(String::from_utf8(head).ok());
        }
        if head.len() > REQUEST_HEAD_BYTES_MAX {
            return Ok(None);
        }
    }
}

async fn route(
    head: &str,
    monitor: &Arc<Monitor>,
    slots: &Slots,
    probes_only: bool,
) -> (Response, bool) {
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (
            Response::text("405 Method Not Allowed", "GET only\n"),
            false,
        );
    }
    let path = target.split('?').next().unwrap_or("");
    if probes_only && path != "/healthz" {
        return (busy("every connection slot is taken"), head_only);
    }
    let response = match path {
        "/" | "/index.html" => match page(monitor, slots, Format::Html).await {
            Ok(body) => Response {
                status: "200 OK",
                content_type: "text/html; charset=utf-8",
                body,
            },
            Err(response) => response,
        },
        "/api/leaderboard" => match page(monitor, slots, Format::Json).await {
            Ok(body) => Response {
                status: "200 OK",
                content_type: "application/json",
                body,
            },
            Err(response) => response,
        },
        "/metrics" => {
            let monitor = monitor.clone();
            match tokio::task::spawn_blocking(move || monitor.metrics_text()).await {
                Ok(text) => Response {
                    status: "200 OK",
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: text.into_bytes().into(),
                },
                Err(error) => Response::text("500 Internal Server Error", error.to_string()),
            }
        }
        "/healthz" => match monitor.health() {
            Ok(why) => Response::text("200 OK", why + "\n"),
            Err(why) => Response::text("503 Service Unavailable", why + "\n"),
        },
        _ => Response::text("404 Not Found", "not found\n"),
    };
    (response, head_only)
}

/// Which rendering of the leaderboard.
#[derive(Debug, Clone, Copy)]
enum Format {
    Html,
    Json,
}

/// The leaderboard as `format`, from the monitor's cache (rendered on a blocking thread when
/// the journal changed), once a page slot is free.
async fn page(
    monitor: &Arc<Monitor>,
    slots: &Slots,
    format: Format,
) -> Result<Arc<[u8]>, Response> {
    let Ok(Ok(_slot)) = tokio::time::timeout(PAGE_WAIT, slots.pages.acquire()).await else {
        return Err(busy("every page slot is taken"));
    };
    let monitor = monitor.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        let page = monitor.page();
        match format {
            Format::Html => page.html(),
            Format::Json => page.json(),
        }
    })
    .await;
    match rendered {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(error)) => Err(Response::text("500 Internal Server Error", error)),
        Err(error) => Err(Response::text(
            "500 Internal Server Error",
            error.to_string(),
        )),
    }
}

fn busy(why: &str) -> Response {
    Response::text("503 Service Unavailable", format!("busy: {why}; retry\n"))
}
