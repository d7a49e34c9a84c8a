//! Real endpoints for the notifier's tests: an SMTP server (aiosmtpd, from the venv that
//! `tests/moto/setup.sh` builds) that saves what it receives, and an HTTP webhook
//! receiver that checks the `X-Baton-Signature` HMAC of every request.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One message the SMTP server accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The user that authenticated, if any.
    pub login: Option<String>,
    /// The whole message (headers and body).
    pub raw: String,
}

impl Mail {
    /// The value of header `name` (first occurrence, unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next().unwrap_or("");
        let mut out: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = out.as_mut() {
                if line.starts_with(' ') || line.starts_with('\t') {
                    // Unfolding removes the line break only.
                    v.push_str(line);
                    continue;
                }
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    out = Some(v.trim().to_string());
                }
            }
        }
        out
    }
}

/// aiosmtpd on 127.0.0.1; killed on drop.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Options of [`SmtpServer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// Require AUTH with these credentials.
    pub auth: Option<(String, String)>,
    /// Answer each DATA this late.
    pub delay: Duration,
}

impl SmtpServer {
    /// Start a plain SMTP server that accepts everything. `None` = skipped (no venv).
    pub fn start() -> Option<SmtpServer> {
        SmtpServer::start_with(SmtpOptions::default())
    }

    pub fn start_with(o: SmtpOptions) -> Option<SmtpServer> {
        let py = crate::moto::python().or_else(|| {
            let why =
                "python venv not found: run `bash tests/moto/setup.sh` (tests/run-all.sh does)";
            if std::env::var("BATON_REQUIRE_MOTO").is_ok_and(|v| v == "1") {
                panic!("{why}");
            }
            crate::skip::skip(&crate::skip::current_test("smtp"), why);
            None
        })?;
        let dir = tempfile::tempdir().expect("temporary directory");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("moto/smtp_server.py");
        let mut cmd = Command::new(&py);
        cmd.arg(&script)
            .arg("--dir")
            .arg(dir.path())
            .args(["--delay-ms", &o.delay.as_millis().to_string()])
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some((u, p)) = &o.auth {
            cmd.args(["--user", u, "--password", p]);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", script.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port: u16 = loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("LISTENING ") => {
                    break l["LISTENING ".len()..].trim().parse().expect("port")
                }
                Some(Ok(_)) => continue,
                _ => {
                    let _ = child.kill();
                    panic!("the SMTP server did not start");
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Some(SmtpServer { child, port, dir })
    }

    /// Messages received so far, in order.
    pub fn messages(&self) -> Vec<Mail> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .into_iter()
            .filter_map(|p| {
                let raw = std::fs::read_to_string(&p).ok()?;
                let meta: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(p.with_extension("json")).ok()?)
                        .ok()?;
                Some(Mail {
                    from: meta["from"].as_str().unwrap_or_default().to_string(),
                    to: meta["to"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                    login: meta["login"].as_str().map(str::to_string),
                    raw,
                })
            })
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Lower-case header names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// `Some(true)` when `X-Baton-Signature` is the HMAC of the body with the receiver's
    /// secret, `Some(false)` when it is not, `None` when the request was not signed.
    pub signature_ok: Option<bool>,
    /// The status it was answered with.
    pub status: u16,
}

impl Delivery {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that records each POST and verifies its signature.
/// Answers 200 unless [`WebhookReceiver::respond`] scripted other statuses; can be
/// made slow with [`WebhookReceiver::set_delay`]. Stops on drop.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT/hook`
    pub url: String,
    got: Arc<Mutex<Vec<Delivery>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    delay: Arc<Mutex<Duration>>,
    stop: Arc<AtomicBool>,
}

impl WebhookReceiver {
    pub fn start(secret: Option<&[u8]>) -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook receiver");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s, d, st) = (
            Arc::clone(&got),
            Arc::clone(&script),
            Arc::clone(&delay),
            Arc::clone(&stop),
        );
        let secret = secret.map(<[u8]>::to_vec);
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (g, s, d, secret) = (
                            Arc::clone(&g),
                            Arc::clone(&s),
                            Arc::clone(&d),
                            secret.clone(),
                        );
                        std::thread::spawn(move || {
                            let _ = serve(conn, &g, &s, &d, secret.as_deref());
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        WebhookReceiver {
            addr,
            url: format!("http://{addr}/hook"),
            got,
            script,
            delay,
            stop,
        }
    }

    /// Answer the next requests with these statuses (then 200 again).
    pub fn respond(&self, statuses: &[u16]) {
        self.script.lock().unwrap().extend(statuses.iter().copied());
    }

    /// Wait this long before answering each request.
    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    /// Requests received so far (answered ones, in order).
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    conn: TcpStream,
    got: &Mutex<Vec<Delivery>>,
    script: &Mutex<VecDeque<u16>>,
    delay: &Mutex<Duration>,
    secret: Option<&[u8]>,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut l = String::new();
            reader.read_line(&mut l)?;
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        let signature_ok = headers.get("x-baton-signature").map(|sig| {
            let Some(secret) = secret else { return false };
            let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC key");
            m.update(&body);
            *sig == format!("sha256={}", hex::encode(m.finalize().into_bytes()))
        });
        let d = *delay.lock().unwrap();
        if !d.is_zero() {
            std::thread::sleep(d);
        }
        let status = script.lock().unwrap().pop_front().unwrap_or(200);
        // Recorded before answering, so a client that got the answer finds it here.
        got.lock().unwrap().push(Delivery {
            headers,
            body,
            signature_ok,
            status,
        });
        let reason = if status == 200 { "OK" } else { "Scripted" };
        let resp = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
        );
        conn.write_all(resp.as_bytes())?;
    }
}

/// Run a boto3 snippet against the emulator at `endpoint` (in the venv's python, with
/// the test credentials); the snippet prints one JSON document on its last line.
/// The snippet sees `boto3`, `json` and `ep` (the endpoint).
pub fn boto(endpoint: &str, snippet: &str) -> serde_json::Value {
    let py = crate::moto::python().expect("python venv (tests/moto/setup.sh)");
    let script = format!(
        "import boto3, json, os, sys, datetime\nep = os.environ['AWS_ENDPOINT_URL']\n{snippet}\n"
    );
    let out = Command::new(py)
        .arg("-c")
        .arg(&script)
        .envs(crate::moto::aws_env(endpoint))
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "boto3 snippet failed: {}\n{snippet}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or("null");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("bad JSON from boto3 ({e}): {last}"))
}

/// An SNS topic `name` with an SQS queue `name` subscribed: (topic ARN, queue URL).
pub fn sns_to_sqs(endpoint: &str, name: &str) -> (String, String) {
    let v = boto(
        endpoint,
        &format!(
            r#"
sns = boto3.client('sns', endpoint_url=ep)
sqs = boto3.client('sqs', endpoint_url=ep)
topic = sns.create_topic(Name='{name}')['TopicArn']
url = sqs.create_queue(QueueName='{name}')['QueueUrl']
arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=['QueueArn'])['Attributes']['QueueArn']
sns.subscribe(TopicArn=topic, Protocol='sqs', Endpoint=arn)
print(json.dumps([topic, url]))
"#
        ),
    );
    (
        v[0].as_str().unwrap().to_string(),
        v[1].as_str().unwrap().to_string(),
    )
}

/// Every message waiting in the queue (deleted once read), each the parsed SNS
/// envelope (`Type`, `Subject`, `Message`, `MessageAttributes`, ...).
pub fn sqs_take(endpoint: &str, queue_url: &str) -> Vec<serde_json::Value> {
    let v = boto(
        endpoint,
        &format!(
            r#"
sqs = boto3.client('sqs', endpoint_url=ep)
out = []
while True:
    r = sqs.receive_message(QueueUrl='{queue_url}', MaxNumberOfMessages=10)
    msgs = r.get('Messages', [])
    if not msgs:
        break
    for m in msgs:
        out.append(json.loads(m['Body']))
        sqs.delete_message(QueueUrl='{queue_url}', ReceiptHandle=m['ReceiptHandle'])
print(json.dumps(out))
"#
        ),
    );
    v.as_array().cloned().unwrap_or_default()
}

/// GetMetricStatistics over the last hour, one period: the datapoints
/// (`SampleCount`, `Average`, `Minimum`, `Maximum`, `Sum`).
pub fn cw_stats(
    endpoint: &str,
    namespace: &str,
    metric: &str,
    dims: &[(&str, &str)],
) -> Vec<serde_json::Value> {
    let dims: Vec<serde_json::Value> = dims
        .iter()
        .map(|(k, v)| serde_json::json!({"Name": k, "Value": v}))
        .collect();
    let v = boto(
        endpoint,
        &format!(
            r#"
cw = boto3.client('cloudwatch', endpoint_url=ep)
now = datetime.datetime.now(datetime.timezone.utc)
r = cw.get_metric_statistics(Namespace='{namespace}', MetricName='{metric}', Dimensions=json.loads('{dims}'),
    StartTime=now - datetime.timedelta(hours=1), EndTime=now + datetime.timedelta(minutes=5), Period=7200,
    Statistics=['SampleCount', 'Average', 'Minimum', 'Maximum', 'Sum'])
print(json.dumps([{{k: v for k, v in d.items() if k != 'Timestamp'}} for d in r['Datapoints']]))
"#,
            dims = serde_json::Value::Array(dims)
        ),
    );
    v.as_array().cloned().unwrap_or_default()
}
