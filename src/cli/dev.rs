//! The commands for development and benchmarks: the fake SnapInspect and the fake receiver on
//! their own, and the benchmark helpers that fill a scratch database and time the worker's claim.

use std::net::SocketAddr;

use super::{cli_settings, open_store};
use crate::{
    demo::snapinspect::{FakeConfig, FakeSnapInspect},
    telemetry,
};

/// `fake-snapinspect`: the fake alone, for development against a separate `serve`.
pub(super) async fn fake_snapinspect(
    bind: SocketAddr,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    webhook_url: Option<String>,
) -> anyhow::Result<()> {
    telemetry::init(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()), crate::config::LogFormat::Pretty);
    let fake = FakeSnapInspect::new(FakeConfig {
        client_id: client_id.clone(),
        client_secret,
        redirect_uri: redirect_uri.clone(),
        webhook_url,
    });
    let listener = std::net::TcpListener::bind(bind)?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("fake SnapInspect on {base}");
    println!("  SNAPINSPECT_AUTHORIZE_URL={base}/integration/SnapInspectConnect");
    println!("  SNAPINSPECT_EXCHANGE_URL={base}/integration/ExchangeToken");
    println!("  SNAPINSPECT_API_URL={base}/");
    println!("  SNAPINSPECT_CLIENT_ID={client_id}  (secret from --client-secret / FAKE_SNAPINSPECT_CLIENT_SECRET)");
    println!("  registered redirect_uri: {redirect_uri}");
    println!("  fire webhooks at {base}/fire-webhook");
    // The standalone fake handles SIGINT/SIGTERM itself.
    let server = actix_web::HttpServer::new({
        let configure = fake.configure();
        move || actix_web::App::new().configure(configure.clone())
    })
    .workers(1)
    .listen(listener)?
    .run();
    server.await?;
    Ok(())
}

/// `fake-receiver`: a receiving application that counts what arrives (for the delivery benchmark).
pub(super) async fn fake_receiver(bind: SocketAddr, delay_ms: u64, hang: bool) -> anyhow::Result<()> {
    let receiver = crate::demo::receiver::FakeReceiver::new(None);
    receiver.set_behaviour(std::time::Duration::from_millis(delay_ms), hang);
    let listener = std::net::TcpListener::bind(bind)?;
    println!("fake receiver on http://{}/events", listener.local_addr()?);
    crate::demo::fakes::serve(receiver.configure(), listener)?.await?;
    Ok(())
}

/// `bench-claims`: queue `rows` due events, then time `claims` claims of 16 and print the plan.
pub(super) async fn bench_claims(rows: i64, claims: u32) -> anyhow::Result<()> {
    let store = open_store(&cli_settings()?).await?;
    let now = crate::time::now_ms();
    let started = std::time::Instant::now();
    let queued = store.bench_queue_events(rows, now - rows - 1).await?;
    println!("queued {queued} events in {:.1} s", started.elapsed().as_secs_f64());
    let mut times = Vec::with_capacity(claims as usize);
    for _ in 0..claims {
        let t = std::time::Instant::now();
        let got = store.claim_events("bench", now, now + 600_000, 16).await?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(got.len() == 16, "a claim took {} events; queue more rows than 16 x claims", got.len());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "claim of 16 at {rows} queued: median {:.0} us, p90 {:.0} us, max {:.0} us ({claims} claims, {:?})",
        at(0.5),
        at(0.9),
        at(1.0),
        store.backend()
    );
    for line in store.explain_claim().await? {
        println!("  plan: {line}");
    }
    store.close().await;
    Ok(())
}

/// `bench-preload`: store `events` finished events fanned out to today's endpoints, at once.
pub(super) async fn bench_preload(events: u64, types: String) -> anyhow::Result<()> {
    let store = open_store(&cli_settings()?).await?;
    let types: Vec<&str> = types.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
    anyhow::ensure!(!types.is_empty(), "--types lists at least one type");
    let n = store.bench_preload(events, &types, crate::time::now_ms()).await?;
    store.close().await;
    println!("{n} deliveries queued for {events} events");
    Ok(())
}
