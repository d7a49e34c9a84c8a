//! Starting the agent, in steps: read what it needs ([`Loaded`]: configuration, keys,
//! tokens, TLS, state directory), bind its sockets, set up the notifier and the shared
//! state, spawn the receivers, the API and the helper tasks, and build the [`Runtime`].
//! Every step that cannot succeed stops the start with an [`AgentError`] before anything
//! runs a resource.

use super::*;

/// What the agent reads before it binds anything.
pub(super) struct Loaded {
    pub cfg: Config,
    /// The text of the configuration file (what `GET /v1/config` shows and a push
    /// compares with).
    pub text: String,
    pub me: String,
    pub server: baton_core::config::Server,
    pub key: ClusterKey,
    pub ring: crate::key::KeyRing,
    pub tokens: crate::tokens::ApiTokens,
    pub client_tls: crate::tls::ClientTls,
    pub server_cert: Option<Arc<crate::tls::ServerCert>>,
    pub api_limits: crate::listen::Limits,
    pub fd_event: Option<Event>,
    pub state: StateDir,
    pub alert_log: AlertLog,
    pub epochs: BTreeMap<String, u64>,
    pub ownership: Ownership,
    /// This boot of the machine (`state::host_boot_id`), for `Ownership::fencing_boot`.
    pub boot_id: Option<String>,
    pub boot_count: u64,
    pub seq_base: u64,
}

/// Read the configuration, the keys, the tokens, the TLS files and the state directory.
pub(super) fn load(opts: &AgentOptions) -> Result<Loaded, AgentError> {
    let text = std::fs::read_to_string(&opts.config).map_err(|e| {
        baton_core::config::ConfigError::unreadable(&opts.config.display().to_string(), &e)
    })?;
    let loaded = crate::catalog::load_text(&opts.config, &text)?;
    for w in &loaded.warnings {
        warn!("{w}");
    }
    let cfg = loaded.config;
    let me = opts.server.clone();
    let Some(server) = cfg.server(&me).cloned() else {
        let names = cfg
            .servers
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(AgentError::UnknownServer(me, names));
    };
    // Before anything opens files: raise the open-file limit, size the API caps to it.
    let (api_limits, fd_event) = crate::listen::agent_api_limits(&cfg, &me);
    let (key, ring) = load_keys(&cfg, &opts.config)?;
    let tokens = api_tokens(&cfg, &opts.config, &ring)?;
    // TLS ([api] tls_cert_file): a certificate or CA that cannot be used stops the start.
    let client_tls = crate::tls::ClientTls::for_config(&cfg, &opts.config)?;
    let server_cert = match cfg.api.tls_files(&me) {
        None => None,
        Some((c, k)) => Some(crate::tls::ServerCert::load(
            &crate::catalog::config_path(&opts.config, &c),
            &crate::catalog::config_path(&opts.config, &k),
        )?),
    };
    let state_path = opts
        .state_dir
        .clone()
        .unwrap_or_else(|| cfg.agent.state_dir.clone());
    let state = StateDir::open(&state_path)?;
    for w in state.warnings() {
        warn!("{w}");
    }
    let epochs = state.load_epochs()?;
    let ownership = state.load_ownership()?;
    let (boot_count, seq_base) = next_boot(&state, &cfg)?;
    let alert_log = AlertLog::open(
        state.path().join("alerts"),
        cfg.agent.alert_log_max_bytes,
        usize::try_from(cfg.agent.alert_log_keep).unwrap_or(4),
    )?;
    Ok(Loaded {
        cfg,
        text,
        me,
        server,
        key,
        ring,
        tokens,
        client_tls,
        server_cert,
        api_limits,
        fd_event,
        state,
        alert_log,
        epochs,
        ownership,
        boot_id: crate::state::host_boot_id(),
        boot_count,
        seq_base,
    })
}

/// The cluster key and the ring of the keys accepted besides it during a rotation
/// (`[cluster] accept_key_files`, relative like `key_file`).
fn load_keys(
    cfg: &Config,
    config_file: &std::path::Path,
) -> Result<(ClusterKey, crate::key::KeyRing), AgentError> {
    let key = ClusterKey::load(crate::catalog::config_path(config_file, &cfg.key_file))?;
    for w in key.warnings() {
        warn!("{w}");
    }
    let mut accepted = Vec::new();
    for f in &cfg.accept_key_files {
        let p = crate::catalog::config_path(config_file, f);
        let k = ClusterKey::load(&p)?;
        info!(file = %p.display(), fingerprint = %k.fingerprint(), "also accepting this key (key rotation)");
        accepted.push(k);
    }
    let ring =
        crate::key::KeyRing::new(key.clone(), accepted).with_encryption(cfg.heartbeat.encrypt);
    Ok((key, ring))
}

/// Count this start in the state directory and reserve its sequence numbers: they
/// start above every one the previous run could use, stored (fsynced) before the first
/// heartbeat (wire module docs). Returns (boot count, sequence base).
fn next_boot(state: &StateDir, cfg: &Config) -> Result<(u64, u64), AgentError> {
    let mut meta = state.load_meta()?;
    meta.boot_count += 1;
    meta.last_digest = Some(cfg.digest.clone());
    let seq_base = wire::next_seq_base(meta.seq_base, wire::initial_seq());
    meta.seq_base = Some(seq_base);
    state.store_meta(&meta)?;
    Ok((meta.boot_count, seq_base))
}

/// Bind the heartbeat sockets (one per interconnect path, on this server's address on
/// it) and the API's TCP listener.
pub(super) async fn bind(
    server: &baton_core::config::Server,
) -> Result<(Vec<Arc<UdpSocket>>, tokio::net::TcpListener), AgentError> {
    let mut sockets = Vec::new();
    for addr in &server.interconnects {
        let s = UdpSocket::bind(addr)
            .await
            .map_err(|err| AgentError::Bind {
                what: "heartbeat socket",
                addr: *addr,
                err,
            })?;
        sockets.push(Arc::new(s));
    }
    let api = tokio::net::TcpListener::bind(server.api)
        .await
        .map_err(|err| AgentError::Bind {
            what: "API",
            addr: server.api,
            err,
        })?;
    Ok((sockets, api))
}

/// The notification sinks and metrics (`[notify.*]`, `[metrics.*]`), started; a sink
/// that cannot be set up is left out and returned, to be reported (BTN-5004) once the
/// agent runs.
pub(crate) async fn notifier(
    cfg: &Config,
    me: &str,
    config_file: &std::path::Path,
) -> (
    baton_notifier::NotifierHandle,
    tokio::task::JoinHandle<()>,
    Vec<baton_notifier::build::SinkFailure>,
) {
    let config_dir = config_file
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    let built = baton_notifier::build::build(cfg, me, &config_dir, None).await;
    // `[metrics.prometheus]`: the figures for GET /metrics, fed like the CloudWatch sink.
    let prometheus = cfg.metrics.prometheus.as_ref().map(|_| {
        let groups: Vec<String> = cfg
            .groups
            .iter()
            .filter(|g| g.servers.iter().any(|s| s == me))
            .map(|g| g.name.clone())
            .collect();
        Arc::new(baton_notifier::prometheus::Prometheus::new(
            &cfg.cluster_name,
            me,
            &groups,
        ))
    });
    let (handle, task) = Notifier::start_with_prometheus(
        built.sinks,
        built.metrics,
        prometheus,
        baton_notifier::build::options(&cfg.notify),
    );
    (handle, task, built.failures)
}

/// The resource drivers and monitor probes of this server; the events the cloud drivers
/// raise outside the engine (BTN-6xxx) go to the alert log.
pub(super) fn drivers(
    cfg: &Config,
    me: &str,
    shared: &Arc<Shared>,
    mirror: &crate::mirror_kind::MirrorCtx,
) -> Result<(DriverMap, ProbeMap), AgentError> {
    let reg = crate::catalog::kinds(cfg);
    let built = build_drivers(cfg, me, &reg, mirror)?;
    spawn_mirror_watch(cfg, me, shared, mirror)?;
    if let Some(mut provider_events) = reg.providers.take_events() {
        let sh = shared.clone();
        tokio::spawn(async move {
            while let Some(ev) = provider_events.recv().await {
                sh.raise(ev);
            }
        });
    }
    spawn_prepare(cfg, me, &built.0);
    Ok(built)
}

/// `ResourceDriver::prepare` of every resource in `drivers`, in the background, each
/// within its activation timeout: what a standby's first activation would otherwise do
/// on the takeover's critical path (cloud clients, instance facts, the checks done
/// once). A failure is only logged: the activation does the same work and reports it.
pub(super) fn spawn_prepare(cfg: &Config, me: &str, drivers: &DriverMap) {
    for g in &cfg.groups {
        for r in &g.resources {
            let Some(d) = drivers.get(&(g.name.clone(), r.name.clone())).cloned() else {
                continue;
            };
            let ctx = ActionContext {
                cluster: cfg.cluster_name.clone(),
                group: g.name.clone(),
                resource: r.name.clone(),
                server: me.to_string(),
                epoch: 0,
                timeout: r.activation.timeout.0,
            };
            let span = info_span!("resource_action", action = "prepare", group = %g.name, resource = %r.name, server = %me, epoch = 0u64, attempt = 0u32);
            tokio::spawn(
                async move {
                    let started = crate::clock::now();
                    let outer = ctx.timeout.saturating_add(Duration::from_secs(5));
                    match tokio::time::timeout(outer, d.prepare(&ctx)).await {
                        Ok(Ok(())) => tracing::debug!(
                            took_ms = started.elapsed().as_millis() as u64,
                            "resource prepared"
                        ),
                        Ok(Err(e)) => {
                            info!(error = %e, "resource not prepared; its activation will do it")
                        }
                        Err(_) => info!("resource not prepared in time; its activation will do it"),
                    }
                }
                .instrument(span),
            );
        }
    }
}

/// Keep the mirror process of every `mirror-disk` resource of this server's groups
/// running (or re-adopt it), renew its write lease while this server holds the group
/// with quorum (for the group's self-fence deadline `F_g`: the peer cannot take over before it
/// runs out), and raise its events.
fn spawn_mirror_watch(
    cfg: &Config,
    me: &str,
    shared: &Arc<Shared>,
    mirror: &crate::mirror_kind::MirrorCtx,
) -> Result<(), AgentError> {
    let timing = cfg.timing(cfg.heartbeat.timeout.ms());
    let interval = std::time::Duration::from_millis(timing.interval_ms.clamp(50, 1000));
    for (g, r) in crate::mirror_kind::mirrors_of(cfg, me) {
        let launch = crate::mirror_kind::launch_for(cfg, me, &g, &r, mirror).map_err(|msg| {
            AgentError::Build {
                what: format!("resource {r}"),
                msg,
            }
        })?;
        // The group's own fence deadline F_g: its takeover elsewhere waits T + W_g.
        let fence_ms = cfg
            .groups
            .iter()
            .position(|x| x.name == g)
            .map_or(timing.fence_ms, |gi| {
                cfg.group_timing(gi, timing.timeout_ms).fence_ms
            });
        tokio::spawn(crate::mirror_kind::watch(
            launch,
            shared.clone(),
            fence_ms,
            timing.timeout_ms,
            interval,
        ));
    }
    Ok(())
}

/// The engine, booted with this start's incarnation and what the state directory holds
/// (epochs, groups held before a restart: re-adoption).
pub(super) fn engine(cfg: &Config, me: &str, l: &Loaded) -> Result<Engine, AgentError> {
    let boot = Boot {
        incarnation: wire::incarnation(l.boot_count, rand::random::<u32>()),
        epochs: l.epochs.clone(),
        owned: l
            .ownership
            .groups
            .iter()
            .map(|(g, o)| (g.clone(), o.epoch))
            .collect(),
        // The previous run was stopping groups without quorum when it ended, on this very
        // boot of the machine (after a reboot its resources are stopped).
        fencing: l
            .ownership
            .fencing_boot
            .as_ref()
            .is_some_and(|b| Some(b) == l.boot_id.as_ref()),
    };
    Engine::new(cfg.clone(), me, boot, Millis(0)).map_err(|e| AgentError::Build {
        what: "engine".into(),
        msg: e.to_string(),
    })
}

/// One receiver per heartbeat socket, sharing the acceptor (MAC, sender, sequence
/// numbers across paths) and the round-trip tracker (when a metrics sink wants it).
pub(super) fn spawn_receivers(
    sockets: &[Arc<UdpSocket>],
    shared: &Arc<Shared>,
    t0: Instant,
) -> (wire::SharedRtt, Arc<Mutex<Acceptor>>) {
    let cfg = shared.config();
    let peers: Vec<String> = cfg
        .servers
        .iter()
        .filter(|s| s.name != shared.server)
        .map(|s| s.name.clone())
        .collect();
    let mut acceptor = Acceptor::new(cfg.cluster_name.clone(), peers);
    acceptor.set_me(shared.server.clone());
    // The reference of `bench/scale.sh --parse-every-datagram`: every datagram's body
    // parsed, as before heartbeats were parsed once per send.
    if std::env::var_os("BATON_BENCH_PARSE_EVERY_DATAGRAM").is_some() {
        acceptor.parse_every_datagram();
    }
    // The reference of the one-pass parse: bodies through serde's `flatten`.
    if std::env::var_os("BATON_BENCH_FLATTEN_PARSE").is_some() {
        acceptor.flatten_parse();
    }
    let acceptor = Arc::new(Mutex::new(acceptor));
    let rtt: wire::SharedRtt = shared
        .notifier
        .wants_metric(baton_core::config::MetricKind::HeartbeatRtt)
        .then(|| Arc::new(Mutex::new(wire::RttTracker::new())));
    for (p, sock) in sockets.iter().enumerate() {
        spawn_receiver(
            p,
            sock.clone(),
            acceptor.clone(),
            shared.clone(),
            rtt.clone(),
            t0,
        );
    }
    (rtt, acceptor)
}

/// Receive heartbeats on path `p`: check each datagram (MAC, cluster, sender, path,
/// sequence), count rejections, measure the round trip, and pass good ones to the loop.
fn spawn_receiver(
    p: usize,
    sock: Arc<UdpSocket>,
    acceptor: Arc<Mutex<Acceptor>>,
    shared: Arc<Shared>,
    rtt: wire::SharedRtt,
    t0: Instant,
) {
    if !crate::rxstamp::enable(&sock) {
        warn!(
            path = p,
            "no kernel receive timestamps on this socket: heartbeats count from when they are read"
        );
    }
    let tx = shared.tx.clone();
    let path8 = u8::try_from(p).unwrap_or(u8::MAX);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((n, _from, arrived)) = crate::rxstamp::recv(&sock, &mut buf).await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let (res, newest) = {
                let Ok(mut a) = acceptor.lock() else { continue };
                let r = a.accept_heartbeat(&shared.ring, &buf[..n], path8);
                if let Ok(mut c) = shared.counters.lock() {
                    *c = *a.counters();
                }
                // Sequence numbers grow across the sender's paths: one overtaken on a
                // faster path is older than what the engine already knows.
                let newest = r
                    .as_ref()
                    .is_ok_and(|env| a.newest(&env.from) == Some(env.seq));
                (r, newest)
            };
            // Rejections are counted above; only good heartbeats wake the main loop.
            let env = match res {
                Ok(env) => env,
                Err(e) => {
                    tracing::debug!(error = %e, code = e.code(), "heartbeat rejected");
                    continue;
                }
            };
            let now_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
            let (msg, stamp) = match env.body {
                wire::HeartbeatBody::Full(t) => {
                    let t = *t;
                    (Some(t.body), t.rtt)
                }
                wire::HeartbeatBody::Repeat { rtt } => (None, rtt),
                wire::HeartbeatBody::Unknown => {
                    tracing::debug!(peer = %env.from, path = p, "heartbeat without the group reports held for its sender: dropped until it sends them again");
                    continue;
                }
            };
            if let Some(ms) = wire::rtt_observe(
                &rtt,
                &shared.server,
                &env.from,
                path8,
                stamp.as_ref(),
                now_us,
            ) {
                shared.notifier.metric(Sample::HeartbeatRtt {
                    peer: env.from.clone(),
                    path: path8,
                    ms,
                });
            }
            let msg = match msg {
                Some(m) => LoopMsg::Heartbeat {
                    from: env.from,
                    path: p,
                    msg: Box::new(m),
                    arrived,
                    newest,
                },
                // The same message as the datagram of this send parsed already.
                None => LoopMsg::PathHeard {
                    from: env.from,
                    path: p,
                    arrived,
                },
            };
            if tx.send(msg).await.is_err() {
                break;
            }
        }
    });
}

/// Serve the API on TCP (and TLS when configured) and on the local Unix socket
/// (`[api] socket_dir`; not fatal when it cannot be created: BTN-4024). Returns the
/// two tasks.
pub(super) fn spawn_api(
    shared: &Arc<Shared>,
    listener: tokio::net::TcpListener,
    limits: crate::listen::Limits,
    server_cert: Option<Arc<crate::tls::ServerCert>>,
) -> Result<
    (
        tokio::task::JoinHandle<()>,
        Option<tokio::task::JoinHandle<()>>,
    ),
    AgentError,
> {
    let api_tls = server_cert.as_ref().map(|c| c.acceptor()).transpose()?;
    let sh = shared.clone();
    let api_task = tokio::spawn(async move {
        let app = crate::api::router(sh.clone());
        crate::listen::serve_api(listener, app, limits, sh, api_tls).await;
    });
    if let Some(cert) = server_cert {
        tokio::spawn(reload_tls(cert, shared.clone()));
    }
    let cfg = shared.config();
    let socket_task = match bind_api_socket(&cfg, &shared.server) {
        Ok(None) => None,
        Ok(Some((listener, path))) => {
            info!(socket = %path.display(), role = cfg.api.socket_role.as_str(), "API: listening on the Unix socket");
            let sh = shared.clone();
            let api = cfg.api.clone();
            Some(tokio::spawn(async move {
                let app = crate::api::router(sh.clone());
                let report: crate::listen::Reporter =
                    Arc::new(move |n| sh.raise(crate::listen::notice_event(&n)));
                crate::listen::serve_unix(listener, app, &api, api.socket_role, report).await;
            }))
        }
        Err(msg) => {
            shared.raise(Event::new(&events::API_SOCKET_FAILED, msg));
            None
        }
    };
    Ok((api_task, socket_task))
}

/// The `[quorum] witness` client (the S3 and DynamoDB kinds load the AWS clients).
pub(super) async fn witness(cfg: &Config, key: &ClusterKey) -> Option<Arc<dyn WitnessClient>> {
    let aws = if matches!(
        cfg.quorum.witness,
        baton_core::config::Witness::S3 { .. } | baton_core::config::Witness::Dynamodb { .. }
    ) {
        Some(baton_providers::aws::AwsClients::load(&cfg.aws).await)
    } else {
        None
    };
    crate::witness::witness_client(cfg, key, aws).map(Arc::from)
}

/// Check `[quorum] ping` / `http` every `check_interval` and tell the loop.
pub(super) fn spawn_reachability(cfg: &Config, tx: mpsc::Sender<LoopMsg>) {
    let reach = crate::reach::Reachability::new(&cfg.quorum.ping, &cfg.quorum.http);
    if reach.is_empty() {
        return;
    }
    let every = cfg
        .quorum
        .check_interval
        .map_or(Duration::from_secs(1), |d| d.0);
    tokio::spawn(async move {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            t.tick().await;
            let r = reach.check(every).await;
            let msg = LoopMsg::Reachability {
                ok: r.ok,
                detail: r.detail,
            };
            if tx.send(msg).await.is_err() {
                break;
            }
        }
    });
}

/// `[agent] watchdog_device`, opened now (a device that cannot be opened stops the start).
pub(super) fn open_watchdog(cfg: &Config) -> Result<Option<std::fs::File>, AgentError> {
    let Some(path) = &cfg.agent.watchdog_device else {
        return Ok(None);
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map(Some)
        .map_err(|e| AgentError::Build {
            what: "watchdog device".into(),
            msg: format!("{}: {e}", path.display()),
        })
}

/// The state writer thread; its results come back to the loop.
pub(super) fn start_persistence(
    state: StateDir,
    tx: mpsc::Sender<LoopMsg>,
) -> Result<crate::persist::Persistence, AgentError> {
    let delay = std::env::var("BATON_TEST_STATE_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    let store: Arc<dyn crate::persist::StateStore> = Arc::new(state);
    crate::persist::Persistence::start(store, delay, move |done| {
        let _ = tx.blocking_send(LoopMsg::Persisted(done));
    })
    .map_err(|e| AgentError::Build {
        what: "state writer".into(),
        msg: e.to_string(),
    })
}

/// Loop-stall detector: a plain thread (not a tokio task, which a stalled runtime would
/// not run) that reports when the main loop has not progressed (`progress`, ms since
/// `t0`) for longer than the quorum lease. The watchdogs are fed only by the main loop
/// itself, so a stalled loop stops feeding them and the server is reset.
pub(super) fn spawn_stall_watch(
    shared: &Arc<Shared>,
    progress: Arc<std::sync::atomic::AtomicU64>,
    t0: Instant,
) -> Result<(), AgentError> {
    let shared = shared.clone();
    let cfg = shared.config();
    let limit = cfg.timing(cfg.heartbeat.timeout.ms()).lease_ms.max(100);
    std::thread::Builder::new()
        .name("baton-stall-watch".into())
        .spawn(move || {
            let mut reported = false;
            let mut wait = limit / 4;
            loop {
                std::thread::sleep(Duration::from_millis(wait));
                let last = progress.load(std::sync::atomic::Ordering::Acquire);
                let now = t0.elapsed().as_millis() as u64;
                let stalled = now.saturating_sub(last);
                wait = stall_watch_wait(limit, last, stalled);
                if stalled > limit && last > 0 && !reported {
                    reported = true;
                    let mut ev = Event::new(&events::LOOP_STALLED, format!("agent main loop has not run for {stalled} ms (limit {limit} ms): the watchdog is no longer fed"))
                        .field("stalled_ms", stalled);
                    ev.cluster = shared.config().cluster_name.clone();
                    ev.server = shared.server.clone();
                    ev.time_ms = unix_ms();
                    tracing::error!(stalled_ms = stalled, "agent main loop stalled");
                    if let Ok(mut log) = shared.alert_log.lock() {
                        let _ = log.append(ev.clone());
                    }
                    shared.notifier.publish(ev);
                } else if stalled <= limit {
                    reported = false;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| AgentError::Build {
            what: "stall watcher thread".into(),
            msg: e.to_string(),
        })
}

/// How long the stall watcher sleeps before its next look, given the limit, the loop's
/// last progress (0: none yet) and how long ago that was: until the loop, if it does not
/// progress from now on, will have been still for longer than the limit (the earliest a
/// report can be due) rather than every quarter limit, so the thread of an idle agent
/// wakes about twice a second instead of eight times, and a stall is seen within 1 ms of
/// the limit instead of within a quarter of it. Before the loop's first progress and once
/// past the limit (reported, or until the loop moves again), every quarter limit.
fn stall_watch_wait(limit: u64, last: u64, stalled: u64) -> u64 {
    if last == 0 || stalled > limit {
        (limit / 4).max(1)
    } else {
        limit - stalled + 1
    }
}

/// Read the API's certificate again when its files change (every
/// [`crate::tls::RELOAD_EVERY`] and at SIGHUP): BTN-4025 when a renewal was taken, BTN-4026
/// when the changed files cannot be used (the previous certificate is still served).
async fn reload_tls(cert: Arc<crate::tls::ServerCert>, shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut every = tokio::time::interval(crate::tls::RELOAD_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let now = tokio::select! {
            _ = every.tick() => crate::clock::wall(),
            // At SIGHUP the operator says the files are complete: no settling wait.
            _ = hangup => crate::clock::wall() + Duration::from_secs(60),
        };
        let (c, k) = cert.files();
        match cert.reload_if_changed(now) {
            crate::tls::Reload::Unchanged => {}
            crate::tls::Reload::Reloaded => shared.raise(
                Event::new(
                    &events::API_TLS_RELOADED,
                    format!(
                        "API TLS certificate reloaded from {} and {}",
                        c.display(),
                        k.display()
                    ),
                )
                .field("cert_file", c.display().to_string()),
            ),
            crate::tls::Reload::Failed(e) => shared.raise(
                Event::new(
                    &events::API_TLS_RELOAD_FAILED,
                    format!("API TLS certificate not reloaded: {e}; the previous certificate is still served"),
                )
                .field("cert_file", c.display().to_string())
                .field("code", e.code()),
            ),
        }
    }
}

/// The API's tokens: the cluster key's, the derived role tokens and the issued ones
/// (token files relative to the configuration file's directory, like the key file).
fn api_tokens(
    cfg: &Config,
    config_file: &std::path::Path,
    key: &crate::key::KeyRing,
) -> Result<crate::tokens::ApiTokens, AgentError> {
    let load = |f: &Option<PathBuf>| -> Result<Vec<String>, AgentError> {
        match f {
            None => Ok(Vec::new()),
            Some(p) => {
                crate::tokens::load_tokens_file(&crate::catalog::config_path(config_file, p))
                    .map_err(|msg| AgentError::Build {
                        what: "API tokens".into(),
                        msg,
                    })
            }
        }
    };
    Ok(crate::tokens::ApiTokens::new(
        key,
        cfg.api.derived_tokens,
        load(&cfg.api.read_tokens_file)?,
        load(&cfg.api.operator_tokens_file)?,
    ))
}

/// Create the API's Unix socket (`[api] socket_dir`): the directory (0755) if missing, a
/// stale socket left by a dead agent replaced, the mode and group set before anyone can
/// connect (bound under a private name, then renamed into place). `Ok(None)`: sockets off.
fn bind_api_socket(
    cfg: &Config,
    me: &str,
) -> Result<Option<(tokio::net::UnixListener, PathBuf)>, String> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    let Some(path) = cfg.api.socket_path(&cfg.cluster_name, me) else {
        return Ok(None);
    };
    let dir = &cfg.api.socket_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("cannot create socket directory {}: {e}", dir.display()))?;
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{} exists and is not a socket: remove it or change [api] socket_dir",
                path.display()
            ));
        }
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(format!(
                "another process listens on {} (a second agent for cluster {} and server {me}?)",
                path.display(),
                cfg.cluster_name
            ));
        }
    }
    let gid = match &cfg.api.socket_group {
        None => None,
        Some(g) => match nix::unistd::Group::from_name(g) {
            Ok(Some(gr)) => Some(gr.gid),
            Ok(None) => return Err(format!("socket_group `{g}` does not exist on this server")),
            Err(e) => return Err(format!("cannot look up socket_group `{g}`: {e}")),
        },
    };
    let tmp = dir.join(format!(
        ".{}-{me}.{}.tmp",
        cfg.cluster_name,
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let listener = tokio::net::UnixListener::bind(&tmp)
        .map_err(|e| format!("cannot bind {}: {e}", tmp.display()))?;
    let set_up = (|| -> std::io::Result<()> {
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(gid.as_raw()))?;
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(cfg.api.socket_mode))?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = set_up {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot set up {}: {e}", path.display()));
    }
    Ok(Some((listener, path)))
}

#[cfg(test)]
mod tests {
    use super::stall_watch_wait;

    /// The watcher looks again when a report could first be due, never later: a loop
    /// that stops right after a look is seen stalled 1 ms past the limit.
    #[test]
    fn the_stall_watcher_looks_again_when_a_report_can_first_be_due() {
        let limit = 500;
        // Not started yet, or already past the limit: every quarter limit.
        assert_eq!(stall_watch_wait(limit, 0, 0), 125);
        assert_eq!(stall_watch_wait(limit, 10, 501), 125);
        assert_eq!(stall_watch_wait(3, 10, 4), 1);
        // The loop moved `stalled` ms ago: the next look is 1 ms past the limit from then.
        for stalled in [0, 1, 120, 250, 499, 500] {
            let wait = stall_watch_wait(limit, 1_000, stalled);
            assert_eq!(stalled + wait, limit + 1, "{stalled}");
            assert!(wait >= 1);
        }
        // A loop that keeps moving (every 50 ms here) is looked at about twice a second.
        let (mut t, mut last, mut looks) = (1u64, 1u64, 0);
        while t < 10_000 {
            t += stall_watch_wait(limit, last, t - last);
            looks += 1;
            last = t - t % 50;
            assert!(t - last <= limit);
        }
        assert!(looks <= 25, "{looks} looks in 10 s");
    }
}
