//! The JSON API (documented in `docs/openapi.yaml`) and the page's assets. Everything but the
//! page itself, `GET /api/session`, login and first-boot setup needs a session; every state
//! change also needs the session's CSRF token in `X-CSRF-Token`. A request whose Host is not
//! the box's address (or its configured name) is refused: a DNS-rebinding page in an
//! operator's browser cannot reach the API.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use director_config::{ipvsadm, keepalived, Config, ConfigError};
use director_messages::connections::ConnectionFilter;
use director_messages::events::{EventKind, Severity};
use director_messages::init::CaptureSpec;
use director_messages::init::{InitAnswer, InitRequest, Step};
use director_messages::Problem;

use crate::auth::{self, LoginLimit, PasswordGate, Session, Sessions};
use crate::http::{Request, Response};
use crate::secrets::{self, Secrets};
use crate::update::{Places, UpdateError, Updater};
use crate::{control, host_facts, rs_setup};
use director_config::boot::Slot;
use director_messages::metrics;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const OPENAPI: &str = include_str!("../../docs/openapi.yaml");

/// The server's shared state.
#[derive(Debug)]
pub struct App {
    /// Where `web.slots` lives (the config partition).
    pub state_dir: PathBuf,
    /// The init's control socket.
    pub control: PathBuf,
    /// Where the first-boot setup code is kept (tmpfs).
    pub setup_code_file: PathBuf,
    /// Password hash and certificate.
    pub secrets: Mutex<Secrets>,
    /// Sessions.
    pub sessions: Mutex<Sessions>,
    /// Login attempts.
    pub limit: Mutex<LoginLimit>,
    /// Password checks running at once.
    pub gate: PasswordGate,
    /// Updates into the system slots.
    pub updater: Updater,
}

/// The session cookie's name: `__Host-` makes browsers insist on Secure, Path=/ and no
/// Domain, so no other host (or plain-HTTP page) can set it.
pub const SESSION_COOKIE: &str = "__Host-sid";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Parse a JSON body into `T`; a 400 that names the field otherwise.
pub fn body<T: DeserializeOwned>(req: &Request) -> Result<T, Response> {
    let mut de = serde_json::Deserializer::from_slice(&req.body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        let named = |marker: &str| inner.split(marker).nth(1).and_then(|r| r.split('`').next()).map(str::to_string);
        let field =
            if path != "." && !path.is_empty() { Some(path) } else { named("missing field `").or_else(|| named("unknown field `")) };
        let msg = match &field {
            Some(f) => format!("{f}: {inner}"),
            None => format!("the body is not valid JSON: {inner}"),
        };
        Response::error(400, &msg, field.as_deref())
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetupBody {
    code: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    current: String,
    new: String,
}

/// A reader that counts what it has read (how much of a streamed body is left).
struct Counted<'a> {
    inner: &'a mut dyn std::io::Read,
    n: u64,
}

impl std::io::Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    slot: String,
}

fn session_cookie(token: &str) -> String {
    format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict")
}

impl App {
    /// Load the secrets and make the app.
    pub fn new(state_dir: PathBuf, control: PathBuf, setup_code_file: PathBuf) -> Result<App, String> {
        let s = secrets::load(&state_dir)?;
        Ok(App {
            state_dir,
            control,
            setup_code_file,
            secrets: Mutex::new(s),
            sessions: Mutex::default(),
            limit: Mutex::default(),
            gate: PasswordGate::default(),
            updater: Updater::new(Places::default()),
        })
    }

    fn session(&self, req: &Request) -> Option<(String, Session)> {
        let t = req.cookie(SESSION_COOKIE)?;
        lock(&self.sessions).touch(t, Instant::now()).map(|s| (t.to_string(), s))
    }

    /// The session of a request, checking its CSRF token for state changes.
    fn require(&self, req: &Request, change: bool) -> Result<(String, Session), Response> {
        let Some((t, s)) = self.session(req) else { return Err(Response::error(401, "log in first (or the session expired)", None)) };
        if change && !req.header("x-csrf-token").is_some_and(|c| auth::same(c, &s.csrf)) {
            return Err(Response::error(403, "missing or wrong CSRF token: reload the page", None));
        }
        Ok((t, s))
    }

    fn setup_needed(&self) -> bool {
        lock(&self.secrets).password.is_none()
    }

    /// Count a login (or setup) attempt before its slow check; a 429 if the address has used
    /// its attempts.
    fn login_attempt(&self, req: &Request) -> Option<Response> {
        let wait = lock(&self.limit).attempt(req.peer, Instant::now()).err()?;
        let s = wait.as_secs().max(1);
        Some(
            Response::json(
                429,
                &json!({ "error": format!("too many failed attempts from {}: retry in {s} s", req.peer), "retry_after_s": s }),
            )
            .with("Retry-After", &s.to_string()),
        )
    }

    fn new_session(&self, status_msg: &str) -> Response {
        match lock(&self.sessions).create(Instant::now()) {
            Ok((token, csrf)) => {
                Response::json(200, &json!({ "message": status_msg, "csrf": csrf })).with("Set-Cookie", &session_cookie(&token))
            }
            Err(e) => Response::error(500, &e, None),
        }
    }

    /// Hash and save a new password (power-loss safe); the old one stays if the save fails.
    fn store_password(&self, password: &str) -> Result<(), Response> {
        let hash = self.gate.check(|| auth::hash_password(password)).map_err(|e| Response::error(500, &e, None))?;
        let mut s = lock(&self.secrets);
        let mut next = s.clone();
        next.password = Some(hash);
        secrets::save(&self.state_dir, &next).map_err(|e| Response::error(500, &format!("cannot save the password: {e}"), None))?;
        *s = next;
        Ok(())
    }

    fn setup(&self, req: &Request) -> Response {
        let b: SetupBody = match body(req) {
            Ok(b) => b,
            Err(r) => return r,
        };
        if let Some(r) = self.login_attempt(req) {
            return r;
        }
        if !self.setup_needed() {
            return Response::error(409, "the password is already set: log in", None);
        }
        let want = std::fs::read_to_string(&self.setup_code_file).unwrap_or_default();
        let norm = |s: &str| s.trim().to_ascii_uppercase().replace([' ', '-'], "");
        if want.trim().is_empty() || !auth::same(&norm(&b.code), &norm(&want)) {
            return Response::error(403, "wrong setup code: it is shown on the appliance's console", Some("code"));
        }
        if let Err(e) = auth::check_new_password(&b.password) {
            return Response::error(400, &format!("password: {e}"), Some("password"));
        }
        if let Err(r) = self.store_password(&b.password) {
            return r;
        }
        let _ = std::fs::remove_file(&self.setup_code_file);
        lock(&self.limit).succeeded(req.peer);
        self.event(Severity::Notice, &format!("first-boot setup done from {}: the password is set", req.peer));
        self.new_session("password set")
    }

    fn login(&self, req: &Request) -> Response {
        let b: LoginBody = match body(req) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let Some(hash) = lock(&self.secrets).password.clone() else {
            return Response::error(409, "no password yet: use the setup code from the console", None);
        };
        if let Some(r) = self.login_attempt(req) {
            return r;
        }
        if !self.gate.check(|| auth::verify_password(&b.password, &hash)) {
            self.event(Severity::Warning, &format!("failed login from {}", req.peer));
            return Response::error(401, "wrong password", Some("password"));
        }
        lock(&self.limit).succeeded(req.peer);
        self.event(Severity::Info, &format!("logged in from {}", req.peer));
        self.new_session("logged in")
    }

    fn password(&self, req: &Request) -> Response {
        let b: PasswordBody = match body(req) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let hash = lock(&self.secrets).password.clone().unwrap_or_default();
        if !self.gate.check(|| auth::verify_password(&b.current, &hash)) {
            return Response::error(403, "the current password is wrong", Some("current"));
        }
        if let Err(e) = auth::check_new_password(&b.new) {
            return Response::error(400, &format!("new: {e}"), Some("new"));
        }
        if let Err(r) = self.store_password(&b.new) {
            return r;
        }
        lock(&self.sessions).clear();
        self.event(Severity::Notice, &format!("password changed from {}: every session ended", req.peer));
        Response::json(200, &json!({ "message": "password changed: log in again" }))
    }

    /// Put a login event in the box's event log (without an init, as in tests of the page
    /// alone, on this process's output). On a thread of its own: an init busy applying a
    /// config does not hold up the login's answer.
    fn event(&self, severity: Severity, message: &str) {
        self.event_of(EventKind::Login, severity, message);
    }

    fn event_of(&self, kind: EventKind, severity: Severity, message: &str) {
        let r = InitRequest::Event { kind, severity, message: message.to_string() };
        let (sock, message) = (self.control.clone(), message.to_string());
        std::thread::spawn(move || {
            if control::request(&sock, &r).is_err() {
                println!("{message}");
            }
        });
    }

    /// The event log: JSON, or as text for the download (`?format=text`), filtered by `kind`.
    fn events(&self, req: &Request) -> Response {
        let events = match self.ask(&InitRequest::Events) {
            Ok(InitAnswer::Events { events }) => events,
            Ok(other) => return Response::error(502, &other.human(), None),
            Err(r) => return r,
        };
        let kind = req.param("kind").filter(|k| !k.is_empty());
        if let Some(k) = kind.filter(|k| !EventKind::ALL.iter().any(|e| e.name() == *k)) {
            let names: Vec<&str> = EventKind::ALL.iter().map(|e| e.name()).collect();
            return Response::error(
                400,
                &format!("no event kind {:?}; one of {}", k.chars().take(40).collect::<String>(), names.join(", ")),
                Some("kind"),
            );
        }
        let events: Vec<_> = events.into_iter().filter(|e| kind.is_none_or(|k| e.kind.name() == k)).collect();
        if req.param("format") == Some("text") {
            let text: String = events.iter().map(|e| e.line() + "\n").collect();
            return Response::ok("text/plain; charset=utf-8", text)
                .with("Content-Disposition", "attachment; filename=\"director-events.txt\"");
        }
        Response::json(200, &json!({ "events": events, "kinds": EventKind::ALL.iter().map(|e| e.name()).collect::<Vec<_>>() }))
    }

    /// A packet capture: the init takes it (one at a time, bounded), then the file comes back
    /// as the answer's body, a pcap `tcpdump -r` reads.
    fn capture(&self, req: &Request) -> Response {
        let spec: CaptureSpec = match body(req) {
            Ok(s) => s,
            Err(r) => return r,
        };
        match self.ask(&InitRequest::Capture { spec }) {
            Ok(InitAnswer::Captured { file, nic, packets }) => {
                let bytes = std::fs::read(&file);
                let _ = std::fs::remove_file(&file);
                match bytes {
                    Ok(b) => Response::ok("application/vnd.tcpdump.pcap", b)
                        .with("Content-Disposition", &format!("attachment; filename=\"director-{nic}.pcap\""))
                        .with("X-Capture-Packets", &packets.to_string()),
                    Err(e) => Response::error(500, &format!("the capture's file: {e}"), None),
                }
            }
            Ok(InitAnswer::Error { message }) => Response::error(409, &message, None),
            Ok(other) => Response::error(502, &other.human(), None),
            Err(r) => r,
        }
    }

    /// Ask the init; a 502 if it cannot be reached.
    fn ask(&self, r: &InitRequest) -> Result<InitAnswer, Response> {
        control::request(&self.control, r).map_err(|e| Response::error(502, &format!("the init's control socket: {e}"), None))
    }

    fn current_config(&self) -> Result<Config, Response> {
        match self.ask(&InitRequest::Config)? {
            InitAnswer::Config { document: Some(text) } => Config::parse(&text).map_err(|e| Response::error(500, &e.to_string(), None)),
            InitAnswer::Config { document: None } => Err(Response::error(404, "there is no valid config yet: save one", None)),
            other => Err(Response::error(502, &format!("unexpected answer from the init: {}", other.human()), None)),
        }
    }

    fn put_config(&self, req: &Request) -> Response {
        let cfg: Config = match body(req) {
            Ok(c) => c,
            Err(r) => return r,
        };
        if let Err(ConfigError::Invalid(errs)) = cfg.validate() {
            let problems: Vec<Problem> = errs.into_iter().map(Problem::from).collect();
            return refused(400, None, &problems);
        }
        // As the operator wrote it (fields and order kept).
        let document = String::from_utf8_lossy(&req.body).into_owned();
        match self.ask(&InitRequest::ApplyConfig { document }) {
            Ok(InitAnswer::Applied { applied }) => Response::json(200, &json!({ "message": applied.message, "mode": applied.mode })),
            Ok(InitAnswer::Refused { failure }) => {
                refused(if failure.step == Step::Validate { 400 } else { 409 }, Some(failure.step), &failure.problems)
            }
            Ok(other) => Response::error(502, &other.human(), None),
            Err(r) => r,
        }
    }

    fn act(&self, what: InitRequest) -> Response {
        match self.ask(&what) {
            Ok(InitAnswer::Done { message }) => Response::json(200, &json!({ "message": message })),
            Ok(InitAnswer::Error { message }) => Response::error(409, &message, None),
            Ok(other) => Response::error(502, &other.human(), None),
            Err(r) => r,
        }
    }

    /// A 421 unless the request names the box: its address (the one connected to), a
    /// loopback address or `localhost` (a port forwarded on the operator's own machine), or
    /// the configured `hostname`. A DNS-rebinding page sends its own name and is refused.
    fn misdirected(&self, req: &Request) -> Option<Response> {
        let host = req.host();
        let fine = match host.as_deref() {
            None => false,
            Some("localhost") => true,
            Some(h) => match h.parse::<std::net::IpAddr>() {
                Ok(ip) => ip == req.local || ip.is_loopback(),
                // A name: only the box's own (asked of the init: it changes with the config).
                Err(_) => self.current_config().is_ok_and(|c| c.hostname.is_some_and(|n| n.eq_ignore_ascii_case(h))),
            },
        };
        if fine {
            return None;
        }
        let named = host.map_or_else(|| "no Host header".to_string(), |h| format!("Host {:?}", h.chars().take(100).collect::<String>()));
        Some(Response::error(
            421,
            &format!("this page answers only at the box's own address ({}) or its host name, not {named}: open it by address", req.local),
            None,
        ))
    }

    /// Keep a pending management change, but only through the new address: a confirmation
    /// that arrives on the old one proves nothing about the new one.
    fn confirm(&self, req: &Request) -> Response {
        let new = self.current_config().ok().and_then(|c| c.management?.address);
        let new_ip = new.as_deref().and_then(|a| director_config::parse_cidr(a).ok()).map(|n| std::net::IpAddr::V4(n.addr()));
        if let Some(ip) = new_ip.filter(|ip| *ip != req.local && self.pending_change()) {
            return Response::error(
                409,
                &format!(
                    "confirm from the new address: open https://{ip}/ and confirm there (this request came to {}, which proves nothing about the new address)",
                    req.local
                ),
                None,
            );
        }
        self.act(InitRequest::Confirm)
    }

    /// Whether a management change waits for confirmation.
    fn pending_change(&self) -> bool {
        matches!(self.ask(&InitRequest::Status), Ok(InitAnswer::Status { status }) if status.confirm_within_s.is_some())
    }

    /// Prometheus' scrape: the status in its text format, for the config's bearer token only
    /// (a scraper has no session or CSRF token).
    fn metrics(&self, req: &Request) -> Response {
        let unauthorized = |msg: &str| Response::error(401, msg, None).with("WWW-Authenticate", "Bearer realm=\"director metrics\"");
        let token = match self.current_config() {
            Ok(c) => c.metrics.map(|m| m.token),
            Err(r) if r.status == 404 => None,
            Err(r) => return r,
        };
        let Some(token) = token else {
            return unauthorized("no metrics token is set: set one in the config's metrics section (Configure page)");
        };
        let sent = req.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).map(str::trim);
        if !sent.is_some_and(|s| auth::same(s, &token)) {
            return unauthorized("send the config's metrics token as Authorization: Bearer <token>");
        }
        match self.ask(&InitRequest::Status) {
            Ok(InitAnswer::Status { status }) => {
                Response::ok("text/plain; version=0.0.4; charset=utf-8", metrics::render(&status, &host_facts::read()))
            }
            Ok(other) => Response::error(502, &other.human(), None),
            Err(r) => r,
        }
    }

    /// Reboot shortly, once the answer has gone out.
    fn reboot_soon(&self) {
        let sock = self.control.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(500));
            let _ = control::request(&sock, &InitRequest::Reboot);
        });
    }

    fn update_done(&self, r: Result<String, UpdateError>, what: &str) -> Response {
        match r {
            Ok(message) => {
                self.event_of(EventKind::Update, Severity::Notice, &message);
                self.reboot_soon();
                Response::json(200, &json!({ "message": message }))
            }
            Err(e) => {
                self.event_of(EventKind::Update, Severity::Warning, &format!("{what}: {e}"));
                Response::error(e.status(), &e.to_string(), None)
            }
        }
    }

    /// `POST /api/update`: the bundle is read from `body` as it arrives (`http::STREAMED`).
    pub fn handle_streamed(&self, req: &Request, body: &mut dyn std::io::Read) -> Response {
        if let Some(r) = self.misdirected(req) {
            return r;
        }
        let len = req.streamed.unwrap_or(0) as u64;
        // What the client is still sending is read and dropped before the answer closes the
        // connection (unread data makes the kernel reset it, and the client never sees why):
        // all of it for a logged-in operator, a bounded amount for anyone else.
        let drain = |body: &mut dyn std::io::Read, most: u64| {
            let _ = std::io::copy(&mut std::io::Read::take(body, most), &mut std::io::sink());
        };
        if let Err(r) = self.require(req, true) {
            drain(body, 1 << 20);
            return r;
        }
        let mut counted = Counted { inner: body, n: req.body.len() as u64 };
        let r = self.updater.receive(&req.body, &mut counted, len);
        if r.is_err() {
            let left = len.saturating_sub(counted.n);
            drain(counted.inner, left);
        }
        self.update_done(r, &format!("update from {}", req.peer))
    }

    /// Route one request.
    pub fn handle(&self, req: &Request) -> Response {
        if let Some(r) = self.misdirected(req) {
            return r;
        }
        let m = req.method.as_str();
        let p = req.path.as_str();
        match (m, p) {
            ("GET", "/") => return Response::ok("text/html; charset=utf-8", INDEX),
            ("GET", "/app.js") => return Response::ok("text/javascript", APP_JS),
            ("GET", "/app.css") => return Response::ok("text/css", APP_CSS),
            ("GET", "/openapi.yaml") => return Response::ok("text/yaml", OPENAPI),
            ("GET", "/api/session") => {
                let s = self.session(req);
                return Response::json(
                    200,
                    &json!({ "setup_needed": self.setup_needed(), "logged_in": s.is_some(), "csrf": s.map(|(_, s)| s.csrf) }),
                );
            }
            // JSON only: a cross-site HTML form cannot send it, so no login CSRF.
            ("POST", "/api/setup" | "/api/login") if !req.header("content-type").is_some_and(|c| c.starts_with("application/json")) => {
                return Response::error(400, "send the body as application/json", None)
            }
            ("GET", "/metrics") => return self.metrics(req),
            ("POST", "/api/setup") => return self.setup(req),
            ("POST", "/api/login") => return self.login(req),
            _ => {}
        }
        let known = matches!(
            (m, p),
            ("POST", "/api/logout")
                | ("GET", "/api/status")
                | ("GET", "/api/config")
                | ("GET", "/api/events")
                | ("GET", "/api/history")
                | ("GET", "/api/connections")
                | ("POST", "/api/capture")
                | ("PUT", "/api/config")
                | ("POST", "/api/config/confirm")
                | ("GET", "/api/config/export")
                | ("POST", "/api/config/import-ipvsadm")
                | ("POST", "/api/config/import-keepalived")
                | ("GET", "/api/real-servers/setup")
                | ("POST", "/api/password")
                | ("POST", "/api/reboot")
                | ("POST", "/api/poweroff")
                | ("GET", "/api/update")
                | ("POST", "/api/update/switch")
        );
        if !known {
            return Response::error(404, &format!("no such page or API: {m} {}", p.chars().take(100).collect::<String>()), None);
        }
        let (token, _) = match self.require(req, m != "GET") {
            Ok(s) => s,
            Err(r) => return r,
        };
        match (m, p) {
            ("POST", "/api/logout") => {
                lock(&self.sessions).remove(&token);
                Response::json(200, &json!({ "message": "logged out" }))
                    .with("Set-Cookie", &format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"))
            }
            ("GET", "/api/status") => match self.ask(&InitRequest::Status) {
                Ok(InitAnswer::Status { status }) => Response::json(200, &serde_json::to_value(status).unwrap_or_default()),
                Ok(other) => Response::error(502, &other.human(), None),
                Err(r) => r,
            },
            ("GET", "/api/config") => match self.current_config() {
                Ok(c) => Response::json(200, &serde_json::to_value(c).unwrap_or_default()),
                Err(r) => r,
            },
            ("PUT", "/api/config") => self.put_config(req),
            ("GET", "/api/events") => self.events(req),
            ("POST", "/api/capture") => self.capture(req),
            ("GET", "/api/history") => match self.ask(&InitRequest::History) {
                Ok(InitAnswer::History { series }) => Response::json(200, &json!({ "series": series })),
                Ok(other) => Response::error(502, &other.human(), None),
                Err(r) => r,
            },
            ("GET", "/api/connections") => {
                let pairs = req.query.split('&').filter(|kv| !kv.is_empty()).map(|kv| kv.split_once('=').unwrap_or((kv, "")));
                match ConnectionFilter::parse(pairs) {
                    Ok(filter) => match self.ask(&InitRequest::Connections { filter }) {
                        Ok(InitAnswer::Connections { list }) => Response::json(200, &serde_json::to_value(list).unwrap_or_default()),
                        Ok(other) => Response::error(502, &other.human(), None),
                        Err(r) => r,
                    },
                    Err(e) => Response::error(400, &e, None),
                }
            }
            ("POST", "/api/config/confirm") => self.confirm(req),
            ("GET", "/api/config/export") => match self.current_config() {
                Ok(c) if req.param("format") == Some("ipvsadm") => Response::ok("text/plain; charset=utf-8", ipvsadm::export(&c.services))
                    .with("Content-Disposition", "attachment; filename=\"ipvsadm.rules\""),
                Ok(c) => Response::json(200, &serde_json::to_value(c).unwrap_or_default())
                    .with("Content-Disposition", "attachment; filename=\"director.json\""),
                Err(r) => r,
            },
            ("POST", "/api/config/import-ipvsadm") => match ipvsadm::import(&String::from_utf8_lossy(&req.body)) {
                Ok(services) => Response::json(200, &json!({ "services": services })),
                Err(e) => Response::error(400, &e.to_string(), None),
            },
            ("POST", "/api/config/import-keepalived") => match keepalived::import(&String::from_utf8_lossy(&req.body)) {
                Ok(i) => Response::json(200, &json!({ "services": i.services, "not_mapped": i.not_mapped })),
                Err(e) => Response::error(400, &e.to_string(), None),
            },
            ("GET", "/api/real-servers/setup") => match self.current_config() {
                Ok(c) => Response::json(
                    200,
                    &json!({ "real_servers": rs_setup::for_config(&c), "router": rs_setup::router(&c, rs_setup::vip_side_mac(&c)) }),
                ),
                Err(r) => r,
            },
            ("POST", "/api/password") => self.password(req),
            ("POST", "/api/reboot") => self.act(InitRequest::Reboot),
            ("POST", "/api/poweroff") => self.act(InitRequest::Poweroff),
            ("GET", "/api/update") => Response::json(200, &self.updater.report()),
            ("POST", "/api/update/switch") => match body::<SwitchBody>(req) {
                Ok(b) => match Slot::parse(&b.slot) {
                    Some(s) => self.update_done(self.updater.switch(s), "switch"),
                    None => Response::error(400, "slot: say \"a\" or \"b\"", Some("slot")),
                },
                Err(r) => r,
            },
            _ => Response::error(404, "no such API", None),
        }
    }
}

/// A refused config: the first problem's field as `field`, all of them as `fields`, and the
/// step that refused it (none: web-config's own validation).
fn refused(status: u16, step: Option<Step>, problems: &[Problem]) -> Response {
    let fields: Vec<_> = problems.iter().map(|p| json!({ "field": p.field, "message": p.message })).collect();
    let first = problems.iter().find_map(|p| p.field.clone());
    let msg = director_messages::one_line(problems);
    let mut v = json!({ "error": msg, "field": first, "fields": fields });
    if let Some(s) = step {
        v["step"] = s.name().into();
        v["error"] =
            format!("config NOT applied ({} failed): {msg}; the running config stays in force and the saved one is unchanged", s.name())
                .into();
    }
    Response::json(status, &v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_small_and_self_contained() {
        let total = INDEX.len() + APP_JS.len() + APP_CSS.len();
        assert!(total < 100 * 1024, "the page's assets are {total} bytes");
        for asset in [INDEX, APP_JS, APP_CSS] {
            for external in ["http://", "https://", "//cdn", "@import"] {
                assert!(!asset.contains(external), "an external reference ({external}) in the page");
            }
            assert!(!asset.contains("innerHTML"), "the page builds its DOM from text only");
        }
        assert!(INDEX.contains("name=\"viewport\""), "usable on a phone");
    }
}
