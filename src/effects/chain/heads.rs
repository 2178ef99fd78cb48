//! One `eth_subscribe("newHeads")` subscription shared by everything the sender waits for:
//! receipts are looked up when a block arrives rather than by polling, and each head's base fee
//! keeps the fee cache current. Where the node has no subscriptions (or the WebSocket is down) the
//! state says so (`live: false`) and the sender polls as before; the subscription is retried with
//! backoff.

use std::sync::OnceLock;
use std::time::Duration;

use ethers::providers::{Middleware, Provider, Ws};
use ethers::types::{H256, U256, U64};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

/// The longest connecting or subscribing may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause before subscribing again; doubles up to `BACKOFF_MAX`.
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A subscription that lived this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// A block as `newHeads` announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub number: u64,
    pub hash: Option<H256>,
    pub base_fee: Option<U256>,
}

/// What is read of each `newHeads` notification; the rest (the 256-byte bloom, roots, …) is
/// skipped rather than decoded.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeadFields {
    number: Option<U64>,
    hash: Option<H256>,
    base_fee_per_gas: Option<U256>,
}

/// The latest head seen, and whether the subscription is up now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadState {
    pub latest: Option<Head>,
    pub live: bool,
}

/// The subscription, started by the first `watch` (inside the runtime) and ended when the
/// owner and every watcher are gone.
#[derive(Debug)]
pub struct Heads {
    url: String,
    state: OnceLock<watch::Receiver<HeadState>>,
}

impl Heads {
    /// Heads of the node at WebSocket `url` (empty: none; receipts are polled).
    pub fn new(url: String) -> Self {
        Heads {
            url,
            state: OnceLock::new(),
        }
    }

    /// A watch of the heads; starts the subscription on the first call.
    pub fn watch(&self) -> watch::Receiver<HeadState> {
        self.state
            .get_or_init(|| {
                let (tx, rx) = watch::channel(HeadState::default());
                if !self.url.is_empty() {
                    tokio::spawn(follow(self.url.clone(), tx));
                }
                rx
            })
            .clone()
    }

    /// The latest head seen (None before the subscription delivered one).
    pub fn latest(&self) -> Option<Head> {
        self.state.get().and_then(|rx| rx.borrow().latest)
    }

    /// The latest head, if the subscription is up now (else None: the chain may have moved).
    pub fn live_latest(&self) -> Option<Head> {
        self.state
            .get()
            .and_then(|rx| rx.borrow().live.then(|| rx.borrow().latest).flatten())
    }

    /// Whether the subscription is up now.
    pub fn live(&self) -> bool {
        self.state.get().is_some_and(|rx| rx.borrow().live)
    }
}

/// Keeps a subscription up until every watcher is gone.
async fn follow(url: String, tx: watch::Sender<HeadState>) {
    let mut backoff = BACKOFF_START;
    let mut said = false;
    loop {
        let started = Instant::now();
        let why = tokio::select! {
            _ = tx.closed() => return,
            why = session(&url, &tx) => why,
        };
        tx.send_modify(|s| s.live = false);
        if started.elapsed() >= HEALTHY_AFTER {
            backoff = BACKOFF_START;
        }
        if said {
            tracing::debug!(url, reason = %why, "no newHeads subscription; receipts are polled");
        } else {
            tracing::warn!(url, reason = %why, "no newHeads subscription; receipts are polled until it is back");
            said = true;
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection's subscription: publishes every head until it ends; why it ended.
async fn session(url: &str, tx: &watch::Sender<HeadState>) -> String {
    let provider = match tokio::time::timeout(CONNECT_TIMEOUT, Provider::<Ws>::connect(url)).await {
        Ok(Ok(provider)) => provider,
        Ok(Err(e)) => return format!("connect: {e}"),
        Err(_) => return format!("connect timed out after {CONNECT_TIMEOUT:?}"),
    };
    let subscribe = provider.subscribe::<_, HeadFields>(["newHeads"]);
    let mut stream = match tokio::time::timeout(CONNECT_TIMEOUT, subscribe).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return format!("eth_subscribe newHeads: {e}"),
        Err(_) => return format!("eth_subscribe newHeads timed out after {CONNECT_TIMEOUT:?}"),
    };
    tx.send_modify(|s| s.live = true);
    tracing::debug!(url, "subscribed to newHeads");
    while let Some(fields) = stream.next().await {
        let Some(number) = fields.number else {
            continue;
        };
        let head = Head {
            number: number.low_u64(),
            hash: fields.hash,
            base_fee: fields.base_fee_per_gas,
        };
        tx.send_modify(|s| s.latest = Some(head));
    }
    "the subscription ended".into()
}
