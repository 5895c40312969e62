//! The runner's HTTP endpoints on `--metrics-addr`: the leaderboard page at `/`, its JSON at
//! `/api/leaderboard`, Prometheus metrics at `/metrics` and health at `/healthz`.
//!
//! A deliberately small HTTP/1.1 server: GET only, one request per connection, the request
//! head read through a limit and a deadline, so that nothing a client sends can hold memory
//! or a task for long. Everything the page needs is in the response itself.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::monitor::Monitor;
use crate::board::html;

/// The longest request head read.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

/// How long a client has to send its request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Connections served at once; more are closed at once, so a flood of clients cannot take the
/// process's file descriptors (the journal and the evaluation child need them).
const CONNECTIONS_MAX: usize = 16;

/// Serves `monitor` on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, monitor: Arc<Monitor>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
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
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                let monitor = monitor.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let _ =
                        tokio::time::timeout(REQUEST_DEADLINE * 2, answer(stream, &monitor)).await;
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
    body: Vec<u8>,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
}

async fn answer(mut stream: TcpStream, monitor: &Monitor) -> std::io::Result<()> {
    let head = tokio::time::timeout(REQUEST_DEADLINE, read_head(&mut stream)).await;
    let (response, head_only) = match head {
        Ok(Ok(Some(head))) => route(&head, monitor),
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
         Allow: GET, HEAD\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if !head_only {
        stream.write_all(&response.body).await?;
    }
    stream.shutdown().await
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

fn route(head: &str, monitor: &Monitor) -> (Response, bool) {
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
    let response = match path {
        "/" | "/index.html" => Response {
            status: "200 OK",
            content_type: "text/html; charset=utf-8",
            body: html::render(&monitor.leaderboard(), true).into_bytes(),
        },
        "/api/leaderboard" => match serde_json::to_vec_pretty(&monitor.leaderboard()) {
            Ok(body) => Response {
                status: "200 OK",
                content_type: "application/json",
                body,
            },
            Err(error) => Response::text("500 Internal Server Error", error.to_string()),
        },
        "/metrics" => Response {
            status: "200 OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: monitor.metrics_text().into_bytes(),
        },
        "/healthz" => match monitor.health() {
            Ok(why) => Response::text("200 OK", why + "\n"),
            Err(why) => Response::text("503 Service Unavailable", why + "\n"),
        },
        _ => Response::text("404 Not Found", "not found\n"),
    };
    (response, head_only)
}
