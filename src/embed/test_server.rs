//! A scripted stand-in for an OpenAI-compatible embeddings server on loopback, for tests
//! of the real HTTP path (client and pipeline).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// One scripted reply: status, extra headers, body.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_string(),
        }
    }
}

/// What the server received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

/// Serves the replies in order, one per connection, then stops. Returns the base URL and
/// the requests seen.
pub(crate) fn serve(replies: Vec<Reply>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for reply in replies {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let mut length = 0;
            let mut authorization = None;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "authorization" => authorization = Some(value.trim().to_string()),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            log.lock().unwrap().push(Seen {
                path,
                authorization,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
            let mut stream = reader.into_inner();
            let mut head = format!(
                "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                reply.status,
                reply.body.len()
            );
            for (name, value) in &reply.headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(reply.body.as_bytes()).unwrap();
        }
    });
    (url, seen)
}

/// An OpenAI-shaped answer for `n` inputs of `dim` numbers, listed in reverse order (the
/// `index` field says where each belongs).
pub(crate) fn embeddings(n: usize, dim: usize, base: f32) -> Value {
    let data: Vec<Value> = (0..n)
        .rev()
        .map(|i| {
            let v: Vec<f32> = (0..dim)
                .map(|j| base + i as f32 + j as f32 / 10.0)
                .collect();
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    json!({"object": "list", "data": data, "model": "test-embed"})
}
