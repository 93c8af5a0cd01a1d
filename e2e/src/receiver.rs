//! A notification receiver on the loopback: a small HTTP/1.1 server (std only) that records every
//! request it reads and answers as a test tells it to, including not at all.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 to every request.
    Ok,
    /// 500 to the first `n` requests, then 200.
    FailFirst(usize),
    /// 500 while [`HttpReceiver::set_failing`] says so, else 200.
    Switch,
    /// Reads the request and never answers (holds the connection open for a minute).
    Hang,
}

/// One request as the receiver read it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Value,
    /// The status it answered (`None`: it did not answer).
    pub answered: Option<u16>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn event_id(&self) -> &str {
        self.body["eventId"].as_str().unwrap_or_default()
    }
}

struct Shared {
    answer: Answer,
    failing: AtomicBool,
    served: AtomicUsize,
    received: Mutex<Vec<Received>>,
    stop: AtomicBool,
}

/// A receiver listening on `127.0.0.1:<port>`, serving until dropped.
pub struct HttpReceiver {
    pub port: u16,
    shared: Arc<Shared>,
    /// A secret-looking path: the URL must never show up in anything Slipway writes.
    pub token: String,
}

impl HttpReceiver {
    pub fn start(answer: Answer) -> anyhow::Result<HttpReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            answer,
            failing: AtomicBool::new(true),
            served: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let token = format!("hook-{}", crate::hosts::unique_name("tok"));
        let accept = shared.clone();
        std::thread::spawn(move || {
            while !accept.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = accept.clone();
                        std::thread::spawn(move || {
                            if let Err(e) = serve(stream, &shared) {
                                eprintln!("receiver: {e}");
                            }
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => eprintln!("receiver accept: {e}"),
                }
            }
        });
        Ok(HttpReceiver { port, shared, token })
    }

    /// The URL to put in the receiver's Secret.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, self.token)
    }

    /// [`Answer::Switch`]: answer 500 (`true`) or 200.
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// Every request read so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until at least `n` requests were read; returns them all.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<Received>> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n {
                return Ok(got);
            }
            if Instant::now() > deadline {
                bail!("receiver got {} request(s) within {timeout:?}, expected {n}: {got:#?}", got.len());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(stream: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let length: usize =
        headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).context("reading the body")?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = shared.served.fetch_add(1, Ordering::SeqCst);
    let status = match shared.answer {
        Answer::Ok => Some(200),
        Answer::FailFirst(k) => Some(if n < k { 500 } else { 200 }),
        Answer::Switch => Some(if shared.failing.load(Ordering::SeqCst) { 500 } else { 200 }),
        Answer::Hang => None,
    };
    shared.received.lock().unwrap_or_else(|e| e.into_inner()).push(Received {
        method,
        path,
        headers,
        body,
        answered: status,
    });
    let Some(status) = status else {
        std::thread::sleep(Duration::from_secs(60));
        return Ok(());
    };
    let text = if status == 200 { "OK" } else { "Internal Server Error" };
    let mut stream = stream;
    write!(stream, "HTTP/1.1 {status} {text}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")?;
    stream.flush()?;
    Ok(())
}
