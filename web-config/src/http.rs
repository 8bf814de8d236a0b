//! HTTP/1.1 over any stream, one request per connection: the head is parsed by `httparse`
//! within a size limit, the body is read up to `MAX_BODY` (larger → 413 without reading it),
//! the whole exchange runs against one deadline (`Deadline`: a client trickling a byte at a
//! time cannot hold a connection longer than that), and every response carries the page's
//! security headers.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a client has to send its whole request (TLS handshake included).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long writing the answer may take.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// A TCP stream whose reads and writes all end at one deadline (not a timeout per read):
/// each call gets only the time left, and none once it has passed.
#[derive(Debug)]
pub struct Deadline {
    tcp: TcpStream,
    until: Instant,
}

impl Deadline {
    /// `tcp`, to be done with within `within` from now.
    pub fn new(tcp: TcpStream, within: Duration) -> Deadline {
        Deadline { tcp, until: Instant::now() + within }
    }

    /// Move the deadline to `within` from now (the answer gets its own time).
    pub fn extend(&mut self, within: Duration) {
        self.until = Instant::now() + within;
    }

    /// The stream, e.g. for its addresses.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    fn left(&self) -> std::io::Result<Duration> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the request's deadline has passed"));
        }
        Ok(left)
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.tcp.set_read_timeout(Some(left))?;
        self.tcp.read(buf)
    }
}

impl Write for Deadline {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.tcp.set_write_timeout(Some(left))?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// The largest request head.
pub const MAX_HEAD: usize = 16 * 1024;
/// The largest request body (a config document or an ipvsadm file).
pub const MAX_BODY: usize = 64 * 1024;
/// The one request whose body is not read here but streamed to its handler (an update
/// bundle, written to a slot as it arrives, never held in memory).
pub const STREAMED: (&str, &str) = ("POST", "/api/update");
/// The largest streamed body.
pub const MAX_STREAMED: usize = 64 << 20;

/// A request.
#[derive(Debug)]
pub struct Request {
    /// GET, POST, PUT…
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string (after `?`), if any.
    pub query: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body (for a streamed request: the part of it that came with the head).
    pub body: Vec<u8>,
    /// A streamed request's whole body length (its handler reads the rest from the stream).
    pub streamed: Option<usize>,
    /// The client's address.
    pub peer: IpAddr,
    /// The box's address the client connected to.
    pub local: IpAddr,
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// A cookie's value.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.header("cookie")?.split(';').filter_map(|c| c.trim().split_once('=')).find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The Host header's host part: without the port, IPv6 brackets removed, lowercased.
    pub fn host(&self) -> Option<String> {
        let h = self.header("host")?.trim();
        let host = match h.strip_prefix('[') {
            Some(rest) => rest.split_once(']').map_or(rest, |(a, _)| a),
            None => h.rsplit_once(':').map_or(h, |(a, _)| a),
        };
        (!host.is_empty()).then(|| host.to_ascii_lowercase())
    }

    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
    }
}

/// A request that cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpError {
    /// Malformed: 400 with the reason.
    Bad(String),
    /// Head or body over the limit: 413 (431 is folded into it).
    TooLarge,
    /// The client went away or was too slow: no answer.
    Gone,
}

/// Read one request.
pub fn read_request(s: &mut impl Read, peer: IpAddr, local: IpAddr) -> Result<Request, HttpError> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).map_err(|_| HttpError::Gone)?;
        if n == 0 {
            return Err(HttpError::Gone);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut hs = [httparse::EMPTY_HEADER; 48];
        let mut req = httparse::Request::new(&mut hs);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let target = req.path.unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let headers: Vec<(String, String)> =
                    req.headers.iter().map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned())).collect();
                let method = req.method.unwrap_or("GET").to_string();
                let (path, query) = (path.to_string(), query.to_string());
                let len = match headers.iter().find(|(n, _)| n == "content-length") {
                    Some((_, v)) => v.trim().parse::<usize>().map_err(|_| HttpError::Bad("Content-Length is not a number".into()))?,
                    None if headers.iter().any(|(n, _)| n == "transfer-encoding") => {
                        return Err(HttpError::Bad("chunked bodies are not accepted; send Content-Length".into()))
                    }
                    None => 0,
                };
                let streamed = (method.as_str(), path.as_str()) == STREAMED;
                if len > if streamed { MAX_STREAMED } else { MAX_BODY } {
                    return Err(HttpError::TooLarge);
                }
                let mut body = buf.split_off(head_len);
                if streamed {
                    body.truncate(len);
                    return Ok(Request { method, path, query, headers, body, streamed: Some(len), peer, local });
                }
                while body.len() < len {
                    let n = s.read(&mut chunk).map_err(|_| HttpError::Gone)?;
                    if n == 0 {
                        return Err(HttpError::Gone);
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                body.truncate(len);
                return Ok(Request { method, path, query, headers, body, streamed: None, peer, local });
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HttpError::TooLarge),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooLarge),
            Err(e) => return Err(HttpError::Bad(format!("malformed request: {e}"))),
        }
    }
}

/// A response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        421 => "Misdirected Request",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

impl Response {
    /// A 200 with a body of a given type.
    pub fn ok(content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response { status: 200, content_type, headers: Vec::new(), body: body.into() }
    }

    /// A JSON response. `<`, `>` and `&` go out as `\u003c`… (the same JSON): nothing an
    /// operator typed can turn into markup, even where a client mishandles the type.
    pub fn json(status: u16, v: &serde_json::Value) -> Response {
        let body = v.to_string().replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026");
        Response { status, content_type: "application/json", headers: Vec::new(), body: body.into_bytes() }
    }

    /// `{"error": msg}` (and `field` when one field is at fault).
    pub fn error(status: u16, msg: &str, field: Option<&str>) -> Response {
        let mut v = serde_json::json!({ "error": msg });
        if let Some(f) = field {
            v["field"] = f.into();
        }
        Response::json(status, &v)
    }

    /// Add a header.
    pub fn with(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Write it and close.
    pub fn write(&self, s: &mut impl Write) -> std::io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\
             X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n\
             Content-Security-Policy: default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (n, v) in &self.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(&self.body)?;
        s.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_never_carries_markup() {
        let r = Response::json(400, &serde_json::json!({ "error": "<script>alert(1)</script> & more" }));
        let text = String::from_utf8(r.body).unwrap();
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["error"], "<script>alert(1)</script> & more");
    }

    fn read(raw: &[u8]) -> Result<Request, HttpError> {
        read_request(&mut &raw[..], "198.19.0.1".parse().unwrap(), "198.19.0.10".parse().unwrap())
    }

    #[test]
    fn parses_limits_and_refuses() {
        let r = read(b"POST /api/login?x=1 HTTP/1.1\r\nHost: d\r\nCookie: a=1; sid=abc\r\nContent-Length: 4\r\n\r\nbodyEXTRA").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.param("x"), r.cookie("sid")), ("POST", "/api/login", Some("1"), Some("abc")));
        assert_eq!(r.body, b"body");
        assert_eq!(read(b"POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n").unwrap_err(), HttpError::TooLarge);
        assert!(matches!(read(b"GARBAGE\x00 / HTTP/1.1\r\n\r\n"), Err(HttpError::Bad(_))));
        assert!(matches!(read(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Err(HttpError::Bad(_))));
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert_eq!(read(&huge).unwrap_err(), HttpError::TooLarge);
        assert_eq!(read(b"GET / HTTP/1.1\r\n").unwrap_err(), HttpError::Gone);
    }

    #[test]
    fn the_host_header_loses_its_port_and_brackets() {
        let host = |h: &str| read(format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n").as_bytes()).unwrap().host();
        assert_eq!(host("198.19.0.10:8443").as_deref(), Some("198.19.0.10"));
        assert_eq!(host("[::1]:443").as_deref(), Some("::1"));
        assert_eq!(host("Director.Example").as_deref(), Some("director.example"));
        assert_eq!(read(b"GET / HTTP/1.1\r\n\r\n").unwrap().host(), None);
    }
}
